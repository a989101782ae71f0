-- The policy push (R17): the collector looks for sites whose policy changed since it last looked.
CREATE INDEX sites_by_policy_version ON sites (policy_version);

-- What each site's agent last said about applying its policy.
CREATE TABLE policy_reports (
    site_id     TEXT PRIMARY KEY REFERENCES sites (id),
    version     INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    detail      TEXT NOT NULL,
    reported_at TEXT NOT NULL
);

-- Buckets above their site's cap × 1.05 (R17), with the cap they broke. Merged with max, as
-- the buckets are (R10).
CREATE TABLE enforcement_violations (
    site_id      TEXT NOT NULL REFERENCES sites (id),
    bucket_start INTEGER NOT NULL,
    max_bps      INTEGER NOT NULL,
    cap_bps      INTEGER NOT NULL,
    recorded_at  TEXT NOT NULL,
    PRIMARY KEY (site_id, bucket_start)
) WITHOUT ROWID;
