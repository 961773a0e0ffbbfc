-- A device is online while any of its waiting GET /sessions/joinable requests is (issue 15): one
-- row per request, so that one request's end (a short poll, or one of two agents) does not cut
-- the presence another still holds. Presence is ephemeral: the rows of migration 0013 go.
DROP TABLE device_presence;
CREATE TABLE device_presence (
    device_id  TEXT NOT NULL REFERENCES devices(id),
    request_id TEXT NOT NULL,
    until      INTEGER NOT NULL,
    PRIMARY KEY (device_id, request_id)
);
