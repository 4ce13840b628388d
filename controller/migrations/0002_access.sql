-- Operator bearer tokens: only a SHA-256 of the token is kept.
CREATE TABLE tokens (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,
    provinces       TEXT NOT NULL DEFAULT '',   -- comma-separated, for province-tech
    hash            TEXT NOT NULL UNIQUE,
    created_at_ms   INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    revoked_at_ms   INTEGER
);

-- Every change made through the API, hash-chained: each entry's hash covers
-- the previous entry's hash and its own fields.
CREATE TABLE audit (
    seq         INTEGER PRIMARY KEY,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    source      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL
);
CREATE INDEX audit_actor ON audit(actor);
CREATE INDEX audit_target ON audit(target);

CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
