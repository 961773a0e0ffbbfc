-- At most one refresh of a wallet runs at a time: two concurrent refreshes would both produce a
-- next-epoch share, and the device and the server could switch to different ones.
-- A refresh left 'created' or 'running' by an earlier build is over (no process runs it now).
UPDATE sessions SET status = 'failed', detail = 'ended by a server upgrade'
    WHERE protocol = 'refresh' AND status IN ('created', 'running');
CREATE UNIQUE INDEX sessions_one_live_refresh ON sessions (wallet_id)
    WHERE protocol = 'refresh' AND status IN ('created', 'running');

-- A pending share belongs to the refresh session that produced it; only that session switches to it.
ALTER TABLE server_shares ADD COLUMN session_id TEXT;
