-- The server process (replica) that runs a session: when it dies, another replica ends the
-- session (PostgreSQL: each replica holds an advisory lock named after its instance id).
ALTER TABLE sessions ADD COLUMN owner TEXT;
