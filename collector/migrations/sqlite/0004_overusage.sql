-- Over-usage found when a month is finalized (R14), written in the same transaction as the
-- month's saved report, and its resolution (R16).
CREATE TABLE overusages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    month      TEXT NOT NULL,
    license    TEXT NOT NULL,
    -- The region group of a bandwidth-pool over-usage; '' for account-wide meters.
    region     TEXT NOT NULL DEFAULT '',
    measured   INTEGER NOT NULL,
    licensed   INTEGER NOT NULL,
    excess     INTEGER NOT NULL CHECK (excess > 0),
    -- Licenses that require the same increase (R14): comma-separated kinds.
    flags      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    UNIQUE (account_id, month, license, region)
);

CREATE TABLE resolutions (
    overusage_id INTEGER PRIMARY KEY REFERENCES overusages (id),
    kind         TEXT NOT NULL CHECK (kind IN ('true_up', 'true_forward')),
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    -- The license a True-Forward created.
    license_id   INTEGER REFERENCES licenses (id),
    created_at   TEXT NOT NULL
);
