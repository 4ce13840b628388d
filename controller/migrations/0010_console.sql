-- The web console (issue 12).
--
-- Each operator's language, remembered per token: the console opens in it
-- at the next sign-in, in any browser.
CREATE TABLE console_prefs (
    token_id    TEXT PRIMARY KEY,
    lang        TEXT NOT NULL,          -- en | fa
    updated_ms  INTEGER NOT NULL
);

-- Readiness per province, sampled every few minutes ([console]
-- sample_minutes) and kept for a number of days (sample_keep_days): the
-- national page's trend. `reasons` is JSON ({"offline": 3, ...}, non-zero
-- counts only).
CREATE TABLE readiness_samples (
    at_ms       INTEGER NOT NULL,
    province    TEXT NOT NULL,
    total       INTEGER NOT NULL,
    ready       INTEGER NOT NULL,
    reasons     TEXT NOT NULL,
    PRIMARY KEY (at_ms, province)
);
