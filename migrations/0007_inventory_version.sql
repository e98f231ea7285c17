-- The version of a sku (the number of its adjustments), for the query API's `version` and ETag
-- and the command API's `If-Match`. Added to the inventory table of every read-model version that
-- exists. Rows written before this count from 0: `eventline-projector rebuild` gives exact
-- versions for skus adjusted before the upgrade.
DO $$
DECLARE
    version_schema text;
BEGIN
    FOR version_schema IN SELECT 'read_model_v' || version FROM read_model_versions LOOP
        IF to_regclass(version_schema || '.inventory') IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.inventory ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 0',
                           version_schema);
        END IF;
    END LOOP;
END $$;
