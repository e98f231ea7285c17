-- The command service's decision state (see services/command/src/state): what the business rules
-- need about each aggregate, equal to a fold of the log, plus every decided event. Created by the
-- service itself, idempotently, in one transaction; dropping the schema makes the service fold the
-- log again.
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

-- A decided group's two statements (services/command/src/state/store.rs). Functions, so that a
-- group costs one round trip to lock and read and one to write and commit, with plans cached per
-- connection. Their plans are generic (`plan_cache_mode`): PostgreSQL would otherwise keep planning
-- each statement again on every call, since a generic plan's estimate for `= ANY(<array>)` looks
-- no better than a custom one; the generic plans are the same index scans, and planning was a
-- quarter of `lock_and_read`'s time (pgbench, one client).
--
-- Takes the shared state lock and the aggregates' locks (`lock_ids` ascending: no two groups wait
-- for each other in a cycle; held by the session until released), then reads what the group
-- needs. The reads are statements of their own in a VOLATILE function, so their snapshot is taken
-- after the locks are granted and holds every write of the locks' previous holder.
CREATE OR REPLACE FUNCTION command_state.lock_and_read(
    state_lock bigint, lock_ids bigint[], user_ids uuid[], email_keys text[], order_ids uuid[],
    payment_ids uuid[], sku_ids text[], event_ids uuid[], aggregates text[]
) RETURNS json LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM pg_advisory_lock_shared(state_lock);
    PERFORM pg_advisory_lock(id) FROM unnest(lock_ids) AS id;
    RETURN json_build_object(
        'users', (SELECT coalesce(json_agg(json_build_array(u.user_id, u.email_key, u.version)), '[]')
            FROM command_state.users AS u WHERE u.user_id = ANY(user_ids) OR u.email_key = ANY(email_keys)),
        'orders', (SELECT coalesce(json_agg(json_build_array(o.order_id, o.user_id, o.currency, o.total,
                o.payment_id, o.version)), '[]')
            FROM command_state.orders AS o WHERE o.order_id = ANY(order_ids)),
        'payments', (SELECT coalesce(json_agg(json_build_array(p.payment_id, p.order_id)), '[]')
            FROM command_state.payments AS p WHERE p.payment_id = ANY(payment_ids)),
        'skus', (SELECT coalesce(json_agg(json_build_array(s.sku, s.stock, s.version)), '[]')
            FROM command_state.skus AS s WHERE s.sku = ANY(sku_ids)),
        -- The group's own events (a retried request) and every pending decision on its aggregates,
        -- oldest first; a pending envelope is fetched separately (rare: an interrupted append).
        'decisions', (SELECT coalesce(json_agg(json_build_array(d.event_id, d.log_partition, d.log_offset,
                d.envelope IS NOT NULL) ORDER BY d.seq), '[]')
            FROM command_state.decisions AS d
            WHERE d.event_id = ANY(event_ids) OR (d.envelope IS NOT NULL AND d.aggregate = ANY(aggregates))));
END
$$;
-- Writes the state of the aggregates a group changed and its decisions, pending, in decision
-- order (a rebuild writes its folded state through it too, with no decisions). Run on its own, it
-- commits as it returns.
CREATE OR REPLACE FUNCTION command_state.save(
    user_ids uuid[], user_emails text[], user_versions bigint[],
    order_ids uuid[], order_users uuid[], order_currencies text[], order_totals text[],
    order_payments uuid[], order_versions bigint[],
    payment_ids uuid[], payment_orders uuid[],
    sku_ids text[], sku_stocks bigint[], sku_versions bigint[],
    event_ids uuid[], event_aggregates text[], envelopes bytea[]
) RETURNS void LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    INSERT INTO command_state.users (user_id, email_key, version)
        SELECT * FROM unnest(user_ids, user_emails, user_versions)
        ON CONFLICT (user_id) DO UPDATE SET email_key = EXCLUDED.email_key, version = EXCLUDED.version;
    INSERT INTO command_state.orders (order_id, user_id, currency, total, payment_id, version)
        SELECT * FROM unnest(order_ids, order_users, order_currencies, order_totals, order_payments,
            order_versions)
        ON CONFLICT (order_id) DO UPDATE SET user_id = EXCLUDED.user_id, currency = EXCLUDED.currency,
            total = EXCLUDED.total, payment_id = EXCLUDED.payment_id, version = EXCLUDED.version;
    INSERT INTO command_state.payments (payment_id, order_id)
        SELECT * FROM unnest(payment_ids, payment_orders) ON CONFLICT (payment_id) DO NOTHING;
    INSERT INTO command_state.skus (sku, stock, version)
        SELECT * FROM unnest(sku_ids, sku_stocks, sku_versions)
        ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock, version = EXCLUDED.version;
    INSERT INTO command_state.decisions (event_id, aggregate, envelope)
        SELECT d.id, d.aggregate, d.envelope
        FROM unnest(event_ids, event_aggregates, envelopes) WITH ORDINALITY AS d(id, aggregate, envelope, n)
        ORDER BY d.n;
END
$$;
-- Records where appended decisions landed; they are no longer pending. Committed without waiting
-- for the disk: a record lost in a crash leaves the decision pending, and it is appended again
-- with the same event id (a copy the projector ignores) -- the path every interrupted append takes.
CREATE OR REPLACE FUNCTION command_state.mark_appended(event_ids uuid[], partitions integer[], offsets bigint[])
RETURNS void LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE command_state.decisions AS d SET envelope = NULL, log_partition = a.p, log_offset = a.o
        FROM unnest(event_ids, partitions, offsets) AS a(id, p, o) WHERE d.event_id = a.id;
END
$$;
