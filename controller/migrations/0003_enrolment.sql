-- One single-use, expiring enrolment token per device of a shipment; only
-- a SHA-256 of the token is kept.
CREATE TABLE enrol_tokens (
    hash            TEXT PRIMARY KEY,
    device          TEXT NOT NULL REFERENCES devices(id),
    shipment        TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    expires_at_ms   INTEGER NOT NULL,
    used_at_ms      INTEGER
);
CREATE INDEX enrol_tokens_shipment ON enrol_tokens(shipment);

-- Every device certificate the CA issued.
CREATE TABLE certificates (
    serial          TEXT PRIMARY KEY,
    device          TEXT NOT NULL REFERENCES devices(id),
    issued_at_ms    INTEGER NOT NULL,
    not_after_ms    INTEGER NOT NULL,
    revoked_at_ms   INTEGER
);
CREATE INDEX certificates_device ON certificates(device);
