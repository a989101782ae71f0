-- Who hears of an account's over-usage (R15): e-mail addresses and webhook URLs, per account.
-- A sub-account's notifications also go to its managing partner's recipients.
CREATE TABLE notification_recipients (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    channel    TEXT NOT NULL CHECK (channel IN ('email', 'webhook')),
    address    TEXT NOT NULL,
    PRIMARY KEY (account_id, channel, address)
) WITHOUT ROWID;

-- The durable outbox: one row per recipient of a month's over-usage notification, written in
-- the same transaction that finalizes the month, so a notification is never lost and never
-- created twice. A row is delivered once: `delivered_at` is set after the transport accepted it.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    month           TEXT NOT NULL,
    channel         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at    TEXT,
    last_error      TEXT,
    UNIQUE (account_id, month, channel, recipient)
);
CREATE INDEX outbox_due ON outbox (delivered_at, next_attempt_at);
