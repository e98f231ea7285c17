-- Per-user figures kept by the projector, so that GET /users/{id} reads one row instead of
-- aggregating the user's orders on every read: the number of orders, and the total of paid orders
-- per currency (a JSON object, currency code -> decimal string). Added to the users table of every
-- read-model version that exists and filled from its orders, so an upgraded database serves exact
-- figures at once. (Versions created later copy the live version's tables, columns included.)
DO $$
DECLARE
    version_schema text;
BEGIN
    FOR version_schema IN SELECT 'read_model_v' || version FROM read_model_versions LOOP
        IF to_regclass(version_schema || '.users') IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.users
                                ADD COLUMN IF NOT EXISTS order_count bigint NOT NULL DEFAULT 0,
                                ADD COLUMN IF NOT EXISTS total_spent jsonb NOT NULL DEFAULT ''{}''',
                           version_schema);
            EXECUTE format('UPDATE %1$I.users u SET
                                order_count = (SELECT count(*) FROM %1$I.orders o WHERE o.user_id = u.user_id),
                                total_spent = (SELECT COALESCE(jsonb_object_agg(s.currency, s.total::text), ''{}''::jsonb)
                                                 FROM (SELECT currency, sum(total_amount) AS total FROM %1$I.orders o
                                                        WHERE o.user_id = u.user_id AND o.status = ''paid''
                                                        GROUP BY currency) s)',
                           version_schema);
        END IF;
    END LOOP;
END $$;
