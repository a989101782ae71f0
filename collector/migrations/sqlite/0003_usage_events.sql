-- Metered events (R12, R13): one row per event id, so a repeated event changes nothing, even
-- across restarts. Each row is already reduced to what its meter counts: a subject (user,
-- device, or the UTC hour for Data Lake), a ZTNA region, a quantity (Data Lake event count),
-- and whether it qualifies at all (an unauthenticated ZTNA session, a Socket seen as a device...).
CREATE TABLE usage_events (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id),
    meter       TEXT NOT NULL,
    month       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    region      TEXT,
    quantity    INTEGER NOT NULL CHECK (quantity >= 0),
    counted     INTEGER NOT NULL CHECK (counted IN (0, 1)),
    occurred_at TEXT NOT NULL,
    received_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX usage_events_by_month ON usage_events (account_id, month, meter, subject);
