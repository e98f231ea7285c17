-- Projections (issue 46): the read models are no longer one unit. Each projection (a set of read
-- models that change together) has its own versions, each in a schema of its own with its own
-- checkpoints, dedup records, identity and parked keys, and is rebuilt, verified and rolled back
-- alone. The versions so far are those of the `main` projection, whose schemas keep their names
-- (`read_model_v<N>`); another projection's are `<projection>_v<N>`.
ALTER TABLE read_model_versions ADD COLUMN projection text NOT NULL DEFAULT 'main'
    CHECK (projection ~ '^[a-z][a-z_]{0,40}$');
ALTER TABLE read_model_versions DROP CONSTRAINT read_model_versions_pkey;
ALTER TABLE read_model_versions ADD PRIMARY KEY (projection, version);
DROP INDEX read_model_versions_one_live;
DROP INDEX read_model_versions_one_previous;
DROP INDEX read_model_versions_one_building;
DROP INDEX read_model_versions_one_verifying;
CREATE UNIQUE INDEX read_model_versions_one_live ON read_model_versions (projection) WHERE state = 'live';
CREATE UNIQUE INDEX read_model_versions_one_previous ON read_model_versions (projection) WHERE state = 'previous';
CREATE UNIQUE INDEX read_model_versions_one_building ON read_model_versions (projection) WHERE state = 'building';
CREATE UNIQUE INDEX read_model_versions_one_verifying ON read_model_versions (projection) WHERE state = 'verifying';

-- The schema of a version (`eventline_read_models::Version::schema` says the same).
CREATE OR REPLACE FUNCTION read_model_schema(projection text, version integer)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE projection WHEN 'main' THEN 'read_model' ELSE projection END || '_v' || version
$$;

-- Later migrations reach every version of every projection holding the table they change.
CREATE OR REPLACE FUNCTION read_model_alter_each_version(table_name text, statement text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    version_schema text;
BEGIN
    FOR version_schema IN SELECT read_model_schema(projection, version) FROM read_model_versions LOOP
        IF to_regclass(version_schema || '.' || table_name) IS NOT NULL THEN
            EXECUTE format(statement, version_schema);
        END IF;
    END LOOP;
END $$;

-- Orders by status, the first projection added beside `main`: its version 1 is created empty and
-- `building`. The live projector finds a projection with no live version and catches it up from
-- the log's first offset by itself, while the others serve; then it switches it live.
CREATE SCHEMA orders_by_status_v1;
DO $$
DECLARE
    live text := (SELECT read_model_schema(projection, version) FROM read_model_versions
                  WHERE projection = 'main' AND state = 'live');
    bookkeeping text;
BEGIN
    FOREACH bookkeeping IN ARRAY ARRAY['processed_events', 'projection_checkpoints', 'projection_identity',
                                       'parked_keys', 'parked_events'] LOOP
        EXECUTE format('CREATE TABLE orders_by_status_v1.%1$I (LIKE %2$I.%1$I INCLUDING ALL)', bookkeeping, live);
    END LOOP;
END $$;
INSERT INTO orders_by_status_v1.projection_identity DEFAULT VALUES;

-- One row per order, placed or only paid so far (a payment can be applied before its order: the
-- row then waits, without the order's fields, and is listed once the order is placed).
CREATE TABLE orders_by_status_v1.orders_by_status (
    order_id      uuid        PRIMARY KEY,
    user_id       uuid,
    status        text        NOT NULL CHECK (status IN ('awaiting_payment', 'paid')),
    currency      text,
    total_amount  numeric,
    placed_at     timestamptz,
    paid_at       timestamptz,
    updated_at    timestamptz NOT NULL,
    CHECK ((user_id IS NULL) = (placed_at IS NULL))
);
-- `GET /orders?status=`, oldest first, and the same for one user (`&userId=`): keyset pages.
CREATE INDEX orders_by_status_listing ON orders_by_status_v1.orders_by_status (status, placed_at, order_id)
    WHERE placed_at IS NOT NULL;
CREATE INDEX orders_by_status_of_user ON orders_by_status_v1.orders_by_status (user_id, status, placed_at, order_id)
    WHERE placed_at IS NOT NULL;

INSERT INTO read_model_versions (projection, version, state) VALUES ('orders_by_status', 1, 'building');
