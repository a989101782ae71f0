-- The usage engine's derived data: each site's daily P95 (R5), recomputed from `buckets` when a
-- day changes. `dirty_days` is written in the same transaction as the buckets, so a crash never
-- loses a recomputation; `generation` tells a recomputation whether the day changed again while
-- it ran (then the row stays and the day is computed once more).

CREATE TABLE site_days (
    site_id         TEXT NOT NULL REFERENCES sites (id),
    day             TEXT NOT NULL,
    p95_bps         INTEGER NOT NULL CHECK (p95_bps >= 0),
    buckets_present INTEGER NOT NULL CHECK (buckets_present BETWEEN 0 AND 288),
    computed_at     TEXT NOT NULL,
    PRIMARY KEY (site_id, day)
) WITHOUT ROWID;
CREATE INDEX site_days_by_day ON site_days (day);

CREATE TABLE dirty_days (
    site_id    TEXT NOT NULL REFERENCES sites (id),
    day        TEXT NOT NULL,
    generation INTEGER NOT NULL,
    PRIMARY KEY (site_id, day)
) WITHOUT ROWID;

-- A month's report as it stood when the month was finalized (R9): later buckets are stored and
-- counted as late, and never change it.
CREATE TABLE finalized_months (
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    month        TEXT NOT NULL,
    finalized_at TEXT NOT NULL,
    report       TEXT NOT NULL,
    PRIMARY KEY (account_id, month)
) WITHOUT ROWID;

-- When a bucket last arrived (first arrival is `received_at`): a bucket re-sent or raised after
-- its month was finalized counts as late (R9).
ALTER TABLE buckets ADD COLUMN last_received_at TEXT;
