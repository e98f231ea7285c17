-- The command service's decision state (see services/command/src/state): what the business rules
-- need about each aggregate, equal to a fold of the log, plus every decided event. Created by the
-- service itself, idempotently, in one transaction (statements end with a semicolon; comment lines
-- are skipped); dropping the schema makes the service fold the log again.
CREATE SCHEMA IF NOT EXISTS command_state;
-- Which log the state is a fold of; no row means the state must be rebuilt before deciding.
CREATE TABLE IF NOT EXISTS command_state.log (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    topic text NOT NULL,
    cluster_id text NOT NULL,
    topic_id uuid NOT NULL,
    folded_events bigint NOT NULL,
    folded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS command_state.users (
    user_id uuid PRIMARY KEY,
    email_key text NOT NULL,
    version bigint NOT NULL
);
-- Not unique: a log written before the rules existed may hold one email twice.
CREATE INDEX IF NOT EXISTS users_by_email ON command_state.users (email_key);
CREATE TABLE IF NOT EXISTS command_state.orders (
    order_id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    currency text NOT NULL,
    total text NOT NULL,
    payment_id uuid,
    version bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS command_state.payments (
    payment_id uuid PRIMARY KEY,
    order_id uuid NOT NULL
);
CREATE TABLE IF NOT EXISTS command_state.skus (
    sku text PRIMARY KEY,
    stock bigint NOT NULL,
    version bigint NOT NULL
);
-- Every decided event. `envelope` is set while the event may not be in the log yet (pending):
-- whoever next locks its aggregate, or the start-up sweep, appends it again with the same id.
CREATE TABLE IF NOT EXISTS command_state.decisions (
    event_id uuid PRIMARY KEY,
    seq bigserial NOT NULL,
    aggregate text NOT NULL,
    envelope bytea,
    log_partition integer,
    log_offset bigint
);
CREATE INDEX IF NOT EXISTS decisions_pending ON command_state.decisions (aggregate, seq) WHERE envelope IS NOT NULL;
