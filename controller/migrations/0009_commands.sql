-- Remote commands (issue 10).
--
-- Every command the controller sends, stored before it is published. The
-- device's command-result event sets `state` (ok or failed), `result_ms`
-- and `message`; a sweeper marks `expired` the commands still `sent` past
-- their expiry. For upload-logs, only the SHA-256 of the one-use upload
-- token is kept (hex), and `upload_bytes` is set when the upload arrived;
-- the token is spent (`upload_token_sha256` set to NULL) on first use.
CREATE TABLE commands (
    id                  TEXT PRIMARY KEY,
    device              TEXT NOT NULL REFERENCES devices(id),
    action              TEXT NOT NULL,
    issued_ms           INTEGER NOT NULL,
    expires_ms          INTEGER NOT NULL,
    issued_by           TEXT NOT NULL,
    state               TEXT NOT NULL,      -- sent | ok | failed | expired
    result_ms           INTEGER,
    message             TEXT NOT NULL DEFAULT '',
    upload_token_sha256 TEXT,
    upload_bytes        INTEGER
) WITHOUT ROWID;
CREATE INDEX commands_by_device ON commands (device, issued_ms);
CREATE INDEX commands_waiting ON commands (state, expires_ms);
