-- Counting a device's and a wallet's live sessions (the caps on concurrent sessions) reads only
-- the sessions that are created or running, not every session ever run.
CREATE INDEX sessions_live_by_device ON sessions (device_id) WHERE status IN ('created', 'running');
CREATE INDEX sessions_live_by_wallet ON sessions (wallet_id) WHERE status IN ('created', 'running');
