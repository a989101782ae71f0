-- The collector's store (SQLite). Times are RFC 3339 UTC text, dates YYYY-MM-DD, bandwidths
-- integer bits per second, bucket starts integer seconds since the epoch.

CREATE TABLE accounts (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    partner_id        TEXT REFERENCES accounts (id),
    eop_contact_name  TEXT,
    eop_contact_email TEXT,
    created_at        TEXT NOT NULL
);

CREATE TABLE sites (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id),
    name         TEXT NOT NULL,
    country      TEXT NOT NULL,
    region_group TEXT NOT NULL,
    site_type    TEXT NOT NULL,
    cap_bps      INTEGER,
    created_at   TEXT NOT NULL
);
CREATE INDEX sites_by_account ON sites (account_id);

CREATE TABLE licenses (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id     TEXT NOT NULL REFERENCES accounts (id),
    kind           TEXT NOT NULL,
    region         TEXT,
    quantity       INTEGER NOT NULL CHECK (quantity > 0),
    block_size     INTEGER,
    per_unit       INTEGER,
    effective_from TEXT NOT NULL,
    effective_to   TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    CHECK (effective_from <= effective_to)
);
CREATE INDEX licenses_by_account ON licenses (account_id, kind);

-- One row per site and bucket start; a repeated bucket is merged with max (R10).
CREATE TABLE buckets (
    site_id      TEXT NOT NULL REFERENCES sites (id),
    bucket_start INTEGER NOT NULL CHECK (bucket_start % 300 = 0),
    max_bps      INTEGER NOT NULL CHECK (max_bps >= 0),
    samples      INTEGER NOT NULL CHECK (samples BETWEEN 1 AND 60),
    received_at  TEXT NOT NULL,
    PRIMARY KEY (site_id, bucket_start)
) WITHOUT ROWID;

CREATE TABLE enrollment_tokens (
    token_hash TEXT PRIMARY KEY,
    site_id    TEXT NOT NULL REFERENCES sites (id),
    expires_at TEXT NOT NULL,
    used_at    TEXT
);

CREATE TABLE certificates (
    serial     TEXT PRIMARY KEY,
    site_id    TEXT NOT NULL REFERENCES sites (id),
    not_after  TEXT NOT NULL,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX certificates_by_site ON certificates (site_id);
