-- The user a parked event's effect reaches (issue 45): an order placed, or paid, refreshes its
-- user's served document, so while such an event is parked that document lacks it. The query
-- service refuses the user's read as not current (`aggregate-parked`) while one is parked.
SELECT read_model_alter_each_version('parked_events',
    'ALTER TABLE %1$I.parked_events ADD COLUMN IF NOT EXISTS user_id uuid;
     CREATE INDEX IF NOT EXISTS parked_events_by_user ON %1$I.parked_events (topic, user_id)
         WHERE user_id IS NOT NULL');
