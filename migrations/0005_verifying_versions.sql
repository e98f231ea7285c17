-- `verify` folds the log into a scratch read-model version of its own and compares it with the
-- live one; the scratch version is `verifying` while it exists (one at a time), so a verify that
-- was interrupted resumes it and nothing else ever reads or switches to it.
ALTER TABLE read_model_versions DROP CONSTRAINT read_model_versions_state_check;
ALTER TABLE read_model_versions ADD CONSTRAINT read_model_versions_state_check
    CHECK (state IN ('building', 'live', 'previous', 'retired', 'verifying'));
CREATE UNIQUE INDEX read_model_versions_one_verifying ON read_model_versions ((true)) WHERE state = 'verifying';
