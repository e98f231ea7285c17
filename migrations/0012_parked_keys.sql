-- Parked keys (issue 45): an event that decodes but that the database refuses to store (a data
-- error) parks its aggregate key, the Kafka message key. It and every later event of that key
-- wait here, in log order, while every other key is applied; operators redrive or discard a key.
--
-- Both tables belong to a read-model version, like its checkpoints: parking is written in the
-- transaction that moves that version's checkpoint past the events, and a rebuild replays the
-- log into a new version that parks (or applies) on its own.
SELECT read_model_alter_each_version('processed_events',
    'CREATE TABLE IF NOT EXISTS %1$I.parked_keys (
         topic        text        NOT NULL,
         message_key  bytea       NOT NULL,
         partition    integer     NOT NULL,
         -- The first event that was refused: where it is, what it is, and why.
         log_offset   bigint      NOT NULL,
         event_type   text        NOT NULL,
         sqlstate     text,
         error        text        NOT NULL,
         trace_id     text,
         parked_at    timestamptz NOT NULL DEFAULT now(),
         -- Redrives tried and failed.
         attempts     integer     NOT NULL DEFAULT 0,
         PRIMARY KEY (topic, message_key)
     );
     CREATE TABLE IF NOT EXISTS %1$I.parked_events (
         topic        text        NOT NULL,
         partition    integer     NOT NULL,
         log_offset   bigint      NOT NULL,
         message_key  bytea       NOT NULL,
         event_id     uuid        NOT NULL,
         event_type   text        NOT NULL,
         payload      bytea       NOT NULL,
         headers      jsonb       NOT NULL,
         trace_id     text,
         appended_at  timestamptz,
         parked_at    timestamptz NOT NULL DEFAULT now(),
         PRIMARY KEY (topic, partition, log_offset)
     );
     CREATE INDEX IF NOT EXISTS parked_events_by_key ON %1$I.parked_events (topic, message_key, partition, log_offset)');
