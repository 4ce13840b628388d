-- Counties and polling stations come from the operator's registry import.
CREATE TABLE counties (
    code        TEXT PRIMARY KEY,          -- IR-23-TEH
    province    TEXT NOT NULL,             -- IR-23
    name_en     TEXT NOT NULL DEFAULT '',
    name_fa     TEXT NOT NULL DEFAULT ''
);

CREATE TABLE stations (
    id          TEXT PRIMARY KEY,
    county      TEXT NOT NULL REFERENCES counties(code),
    name        TEXT NOT NULL DEFAULT ''
);

CREATE TABLE devices (
    id              TEXT PRIMARY KEY,
    model           TEXT NOT NULL,
    province        TEXT NOT NULL,
    county          TEXT REFERENCES counties(code),
    station         TEXT REFERENCES stations(id),
    lifecycle       TEXT NOT NULL,         -- registered | enrolled
    registered_at   INTEGER NOT NULL       -- unix ms
);
CREATE INDEX devices_province ON devices(province);

-- What the device last reported; one row per device, rewritten in batches.
CREATE TABLE device_status (
    id              TEXT PRIMARY KEY REFERENCES devices(id),
    last_seen_ms    INTEGER,
    presence        TEXT,                  -- online | offline
    session         INTEGER,               -- connection id of the last online presence
    state_json      TEXT,                  -- last State message (JSON form)
    state_sent_at_ms INTEGER,              -- the device's clock when it sent that state
    health_json     TEXT,                  -- last Health message (JSON form)
    health_at_ms    INTEGER
);

-- Device events, idempotent by (device, seq).
CREATE TABLE events (
    device      TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    body_json   TEXT NOT NULL,
    PRIMARY KEY (device, seq)
);

-- Target firmware per model; what `outdated` is measured against.
CREATE TABLE baselines (
    model       TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    set_at_ms   INTEGER NOT NULL
);
