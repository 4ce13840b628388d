-- Events are known by (device, boot, seq): a device that lost its sequence
-- file numbers from 1 again under a new boot id (drawn at each agent start),
-- and those events must not be taken for re-deliveries of old ones. Agents
-- from before the boot id send none: boot 0, keyed by (device, seq) as
-- before. `id` is the arrival order, which the history is read and pruned in
-- (retention: the newest `ingest.events_kept_per_device` per device).
CREATE TABLE events_keyed (
    id          INTEGER PRIMARY KEY,
    device      TEXT NOT NULL,
    boot        INTEGER NOT NULL DEFAULT 0,
    seq         INTEGER NOT NULL,
    at_ms       INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    body_json   TEXT NOT NULL,
    UNIQUE (device, boot, seq)
);

INSERT INTO events_keyed (device, boot, seq, at_ms, received_ms, kind, body_json)
    SELECT device, 0, seq, at_ms, received_ms, kind, body_json
    FROM events ORDER BY received_ms, device, seq;

DROP TABLE events;
ALTER TABLE events_keyed RENAME TO events;
CREATE INDEX events_by_device ON events (device, id);
