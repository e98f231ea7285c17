-- What operators need to work the dead-letter queue: a short id per entry, how many times it was
-- tried (first time plus redrives), and the trace it belonged to.
ALTER TABLE dead_letters
    ADD COLUMN dead_letter_id bigint  GENERATED ALWAYS AS IDENTITY UNIQUE,
    ADD COLUMN attempts       integer NOT NULL DEFAULT 1,
    ADD COLUMN trace_id       text;
