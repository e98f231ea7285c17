-- The event index (issue 33): for every event the projector applied, which aggregate it belongs
-- to, where it sits in the log and its version within the aggregate, with a copy of its data. It
-- serves each aggregate's history, reads as of a version or a time, and the live streams' changes.
-- Written in the same transaction as the other read models and rebuilt by replay like them
-- (a new version copies this table with the others).
--
-- The aggregate is the event's message key: a user, an order (its placement and its payment) or
-- a sku. An aggregate's events share a partition, so `version` (1, 2, … in log order) and the
-- offsets agree. The data is the event's `data` object in its current schema; why a copy rather
-- than reading the log by position is in docs/architecture.md ("The event index").
SELECT read_model_alter_each_version('processed_events',
    'CREATE TABLE IF NOT EXISTS %1$I.event_index (
         aggregate_type text        NOT NULL CHECK (aggregate_type IN (''user'', ''order'', ''inventory'')),
         aggregate_id   text        NOT NULL,
         version        bigint      NOT NULL CHECK (version > 0),
         partition      integer     NOT NULL,
         log_offset     bigint      NOT NULL,
         event_id       uuid        NOT NULL,
         event_type     text        NOT NULL,
         occurred_at    timestamptz NOT NULL,
         appended_at    timestamptz,
         data           jsonb       NOT NULL,
         PRIMARY KEY (aggregate_type, aggregate_id, version)
     );
     CREATE INDEX IF NOT EXISTS event_index_by_position ON %1$I.event_index (partition, log_offset)');
