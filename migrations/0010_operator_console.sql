-- The operator console (projector admin port).
--
-- When the newest event applied from each partition was appended to the log: the console shows a
-- partition's lag as time (now minus that, while events wait). Written with the checkpoint, in
-- the same transaction, by every version (a rebuild's copy takes the column with the table).
SELECT read_model_alter_each_version('projection_checkpoints',
    'ALTER TABLE %I.projection_checkpoints ADD COLUMN IF NOT EXISTS last_appended_at timestamptz');

-- Every action taken through the console: who (the token's name and role), when, what, with
-- which parameters, and what came of it. Kept across rebuilds, so in `public`.
CREATE TABLE IF NOT EXISTS public.console_audit (
    audit_id   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    role       text        NOT NULL,
    action     text        NOT NULL,
    parameters jsonb       NOT NULL,
    succeeded  boolean     NOT NULL,
    result     jsonb       NOT NULL
);
