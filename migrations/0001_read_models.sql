-- Read models of eventline. Everything here is a function of the event log: it can be dropped and
-- rebuilt by replaying the topic from offset 0.

-- Users, one row per UserCreated. Timestamps come from the events, never the wall clock.
CREATE TABLE users (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL,
    first_name    text        NOT NULL,
    last_name     text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_event_id uuid        NOT NULL
);

-- Every event id the projection has applied: the exactly-once guard, written in the same
-- transaction as the effects it guards.
CREATE TABLE processed_events (
    event_id      uuid        PRIMARY KEY,
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    log_offset    bigint      NOT NULL,
    event_type    text        NOT NULL
);

-- Per topic partition, the next offset to apply. The projector resumes from here, not from the
-- offsets committed to Kafka (those are advisory, for lag monitoring).
CREATE TABLE projection_checkpoints (
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    next_offset   bigint      NOT NULL CHECK (next_offset >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Durable record of every message the projector could not apply for good (undecodable, unknown
-- type, invalid data). Written in the same transaction that moves the checkpoint past it, so no
-- skipped message is ever lost; the operators' queue in Redis is rebuilt from here if needed.
CREATE TABLE dead_letters (
    topic         text        NOT NULL,
    partition     integer     NOT NULL,
    log_offset    bigint      NOT NULL,
    message_key   bytea,
    payload       bytea       NOT NULL,
    headers       jsonb       NOT NULL DEFAULT '{}',
    error_code    text        NOT NULL,
    error         text        NOT NULL,
    dead_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, log_offset)
);
