-- Rollouts (issue 10): one signed target put on a selection of devices in
-- waves, driven by the pure engine in domain::rollout and its I/O loop in
-- rollouts/. `spec_json` keeps the request as the API received it
-- (selector, canary, waves, policy) so a restart rebuilds the same plan.
CREATE TABLE rollouts (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL,
    artifact        TEXT NOT NULL,      -- firmware | agent
    model           TEXT NOT NULL,      -- hardware model, or the agent's platform
    version         TEXT NOT NULL,
    manifest        TEXT NOT NULL,      -- the TUF target name
    spec_json       TEXT NOT NULL,
    wave_names_json TEXT NOT NULL,
    phase           TEXT NOT NULL,      -- draft | running | paused | completed | aborted
    wave            INTEGER NOT NULL,
    paused_reason   TEXT,
    held            TEXT,
    created_ms      INTEGER NOT NULL,
    created_by      TEXT NOT NULL,
    started_ms      INTEGER,
    finished_ms     INTEGER
);

CREATE TABLE rollout_members (
    rollout         INTEGER NOT NULL REFERENCES rollouts(id),
    device          TEXT NOT NULL,
    province        TEXT NOT NULL,
    wave            INTEGER NOT NULL,
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    released_ms     INTEGER,
    message         TEXT NOT NULL,
    PRIMARY KEY (rollout, device)
) WITHOUT ROWID;
CREATE INDEX rollout_members_device ON rollout_members (device);

CREATE TABLE rollout_log (
    rollout         INTEGER NOT NULL REFERENCES rollouts(id),
    at_ms           INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    detail          TEXT NOT NULL
);
CREATE INDEX rollout_log_by_rollout ON rollout_log (rollout, at_ms);

-- Why a freeze window is there (shown to operators).
ALTER TABLE freeze_windows ADD COLUMN reason TEXT NOT NULL DEFAULT '';

-- The rollout's attempt at each target: a device tries again a target it
-- gave up on when the attempt changes.
ALTER TABLE desired ADD COLUMN firmware_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE desired ADD COLUMN agent_attempt INTEGER NOT NULL DEFAULT 0;
