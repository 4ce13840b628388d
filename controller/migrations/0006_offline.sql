-- Offline operation (issue 8).
--
-- Each event stream (device, boot) keeps its highest sequence number seen,
-- so a re-delivered event is known as one even after the events table
-- pruned it (retention keeps only the newest events per device): ingest is
-- idempotent on (device, boot, seq) whatever was pruned.
CREATE TABLE event_streams (
    device      TEXT NOT NULL,
    boot        INTEGER NOT NULL,
    first_seq   INTEGER NOT NULL,   -- the lowest seen: the agent drains by priority,
    last_seq    INTEGER NOT NULL,   -- so a stream's first arrival need not be its first
    PRIMARY KEY (device, boot)
) WITHOUT ROWID;

INSERT INTO event_streams (device, boot, first_seq, last_seq)
    SELECT device, boot, MIN(seq), MAX(seq) FROM events GROUP BY device, boot;

-- Sequence numbers a stream skipped: from_seq ..= to_seq were not received
-- when a later one arrived. A late arrival inside a gap shrinks or splits it.
CREATE TABLE event_gaps (
    id          INTEGER PRIMARY KEY,
    device      TEXT NOT NULL,
    boot        INTEGER NOT NULL,
    from_seq    INTEGER NOT NULL,
    to_seq      INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL
);
CREATE INDEX event_gaps_by_stream ON event_gaps (device, boot, from_seq);

-- What devices' outboxes dropped while offline (their `outbox-dropped`
-- events), summed per device: kept here because the events themselves are
-- pruned.
CREATE TABLE outbox_drops (
    device          TEXT PRIMARY KEY,
    health_samples  INTEGER NOT NULL,
    other_events    INTEGER NOT NULL,   -- boot, check-recovered, error events dropped
    reports         INTEGER NOT NULL,
    oldest_ms       INTEGER NOT NULL,   -- device clock: the oldest sample dropped
    newest_ms       INTEGER NOT NULL,   -- device clock: the newest sample dropped
    last_report_ms  INTEGER NOT NULL    -- controller clock: the last report received
) WITHOUT ROWID;

-- The desired state of each device, owned by the controller; the retained
-- message on the broker is a cache of it. No row: the default (config
-- revision 0, no firmware target).
CREATE TABLE desired (
    device              TEXT PRIMARY KEY REFERENCES devices(id),
    config_rev          INTEGER NOT NULL,
    firmware_version    TEXT,
    firmware_manifest   TEXT,
    updated_ms          INTEGER NOT NULL
) WITHOUT ROWID;

-- The device's clock when the health held was sampled (the end of its
-- window for samples coalesced offline): an older one arriving late does
-- not replace it.
ALTER TABLE device_status ADD COLUMN health_sampled_ms INTEGER;
