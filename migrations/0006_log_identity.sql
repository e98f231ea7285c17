-- Which log each read-model version was built from (crates/runtime/src/log_identity.rs): the
-- broker cluster's id and the event topic's id. NULL until the projector (or a rebuild) binds the
-- version to the log it reads. Against another log the projector refuses to project and the query
-- service refuses to answer as if current: offsets of one log mean nothing in another.
ALTER TABLE read_model_versions ADD COLUMN log_cluster_id text;
ALTER TABLE read_model_versions ADD COLUMN log_topic_id uuid;
