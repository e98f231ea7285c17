-- Versioned read models (rebuild by replay). The read-model tables, with their dedup records,
-- checkpoints and projection identity, live in one PostgreSQL schema per version
-- (`read_model_v<N>`). Exactly one version is live: the query service reads it and the projector
-- writes it. A rebuild fills a new version from the log next to it and switches atomically; the
-- previous version is kept for rollback. New versions copy the live version's tables
-- (`CREATE TABLE ... (LIKE ... INCLUDING ALL)`), so the table definitions exist once: here and in
-- earlier migrations, applied to the live version. Dead letters stay shared, in `public`.
CREATE TABLE read_model_versions (
    version      integer     PRIMARY KEY CHECK (version > 0),
    -- building: being filled from the log; live: read and written; previous: the one before,
    -- kept for rollback; retired: about to be dropped.
    state        text        NOT NULL CHECK (state IN ('building', 'live', 'previous', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    switched_at  timestamptz
);
CREATE UNIQUE INDEX read_model_versions_one_live ON read_model_versions ((true)) WHERE state = 'live';
CREATE UNIQUE INDEX read_model_versions_one_previous ON read_model_versions ((true)) WHERE state = 'previous';
CREATE UNIQUE INDEX read_model_versions_one_building ON read_model_versions ((true)) WHERE state = 'building';

-- The tables of the first migrations become version 1, data and all.
CREATE SCHEMA read_model_v1;
ALTER TABLE users SET SCHEMA read_model_v1;
ALTER TABLE orders SET SCHEMA read_model_v1;
ALTER TABLE order_items SET SCHEMA read_model_v1;
ALTER TABLE payments SET SCHEMA read_model_v1;
ALTER TABLE inventory SET SCHEMA read_model_v1;
ALTER TABLE processed_events SET SCHEMA read_model_v1;
ALTER TABLE projection_checkpoints SET SCHEMA read_model_v1;
ALTER TABLE projection_identity SET SCHEMA read_model_v1;
INSERT INTO read_model_versions (version, state, switched_at) VALUES (1, 'live', now());
