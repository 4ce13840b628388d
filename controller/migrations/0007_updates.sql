-- Signed firmware updates (issue 9).
--
-- The agent binary a device should run, beside its firmware target (both
-- are TUF target names in the firmware repository).
ALTER TABLE desired ADD COLUMN agent_version TEXT;
ALTER TABLE desired ADD COLUMN agent_manifest TEXT;

-- Freeze windows (Unix ms, from inclusive, to exclusive): nothing is
-- installed inside one. Fleet-wide; every desired state the controller
-- publishes carries all of them.
CREATE TABLE freeze_windows (
    from_ms     INTEGER NOT NULL,
    to_ms       INTEGER NOT NULL,
    PRIMARY KEY (from_ms, to_ms)
) WITHOUT ROWID;

-- The last update of each device, from its update-progress and
-- update-result events (`domain::updates`). `outcome` is NULL while it
-- runs; `timed-out` is set by the controller when a device that said
-- `rebooting` or `checking` then said nothing for updates.reboot_timeout_secs.
CREATE TABLE device_updates (
    device          TEXT PRIMARY KEY REFERENCES devices(id),
    artifact        TEXT NOT NULL,
    version         TEXT NOT NULL,
    phase           TEXT,
    bytes           INTEGER NOT NULL,
    total           INTEGER NOT NULL,
    outcome         TEXT,
    message         TEXT NOT NULL,
    started_ms      INTEGER NOT NULL,   -- controller clock: its first event arrived
    last_event_ms   INTEGER NOT NULL,   -- controller clock: its last event arrived
    last_at_ms      INTEGER NOT NULL    -- device clock of that event (orders late arrivals)
) WITHOUT ROWID;
CREATE INDEX device_updates_waiting ON device_updates (outcome, phase, last_event_ms);
