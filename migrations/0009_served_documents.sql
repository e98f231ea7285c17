-- The documents the query API serves, kept ready by the projector (crates/read-models/src/
-- documents.rs): each user (figures and most recent orders) and each order (items and payment) as
-- its JSON body and ETag, so that a GET is one primary-key read. Added to the tables of every
-- read-model version that exists; rows stored before this have none (null) and are assembled at
-- read time until an event touches them or `eventline-projector rebuild` fills them all.
--
-- `read_model_alter_each_version` runs a statement (`%I` is the version's schema) on every
-- version that has `table_name`: the one loop migrations 0007 and 0008 each wrote out.
CREATE OR REPLACE FUNCTION read_model_alter_each_version(table_name text, statement text)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    version_schema text;
BEGIN
    FOR version_schema IN SELECT 'read_model_v' || version FROM read_model_versions LOOP
        IF to_regclass(version_schema || '.' || table_name) IS NOT NULL THEN
            EXECUTE format(statement, version_schema);
        END IF;
    END LOOP;
END $$;

-- A row is written again in the batch that inserts it (its document): a fill factor of 70 leaves
-- room on its page for that new version, so the update is a heap-only one that touches no index.
-- (It applies to pages filled from now on.)
SELECT read_model_alter_each_version('users',
    'ALTER TABLE %I.users ADD COLUMN IF NOT EXISTS document text, ADD COLUMN IF NOT EXISTS document_etag text,
                          SET (fillfactor = 70)');
SELECT read_model_alter_each_version('orders',
    'ALTER TABLE %I.orders ADD COLUMN IF NOT EXISTS document text, ADD COLUMN IF NOT EXISTS document_etag text,
                           SET (fillfactor = 70)');
