-- Buckets refused for their time alone (a socket's wrong clock: in the future, or older than
-- max_bucket_age_days): not billed, kept until the operator accepts or discards them. Merged
-- with max, as buckets are (R10).
CREATE TABLE quarantined_buckets (
    site_id        TEXT NOT NULL REFERENCES sites (id),
    bucket_start   INTEGER NOT NULL,
    max_bps        INTEGER NOT NULL,
    samples        INTEGER NOT NULL,
    reason         TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    PRIMARY KEY (site_id, bucket_start)
) WITHOUT ROWID;

-- Buckets refused, per site and reason (quarantined ones included).
CREATE TABLE refusals (
    site_id TEXT NOT NULL REFERENCES sites (id),
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    PRIMARY KEY (site_id, reason)
) WITHOUT ROWID;

-- The discard totals (R3) each site's agent last sent, counted since its store was created.
CREATE TABLE agent_discards (
    site_id           TEXT PRIMARY KEY REFERENCES sites (id),
    counter_reset     INTEGER NOT NULL,
    above_cap         INTEGER NOT NULL,
    elapsed_too_short INTEGER NOT NULL,
    elapsed_too_long  INTEGER NOT NULL,
    reported_at       TEXT NOT NULL
);
