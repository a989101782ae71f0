-- Every cap a site has had, with the time it took effect and its policy version (R26): a bucket
-- is judged against the cap in force when it was measured, not when it arrived.
CREATE TABLE cap_history (
    site_id      TEXT NOT NULL REFERENCES sites (id),
    effective_at TEXT NOT NULL,
    cap_bps      INTEGER,
    version      INTEGER NOT NULL,
    PRIMARY KEY (site_id, version)
) WITHOUT ROWID;
INSERT INTO cap_history (site_id, effective_at, cap_bps, version)
    SELECT id, created_at, cap_bps, policy_version FROM sites;

-- Every policy version a site's agent reported applied, and when (R26).
CREATE TABLE policy_applied (
    site_id     TEXT NOT NULL REFERENCES sites (id),
    version     INTEGER NOT NULL,
    reported_at TEXT NOT NULL,
    PRIMARY KEY (site_id, reported_at, version)
) WITHOUT ROWID;
INSERT INTO policy_applied (site_id, version, reported_at)
    SELECT site_id, version, reported_at FROM policy_reports WHERE ok = 1;
