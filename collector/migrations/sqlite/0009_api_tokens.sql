-- Bearer tokens of the HTTP API: only the SHA-256 of the secret is kept. A customer or partner
-- token belongs to an account; `contact` marks the account's contact person (R21, R22).
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('operator', 'partner', 'customer')),
    account_id  TEXT REFERENCES accounts (id),
    contact     INTEGER NOT NULL DEFAULT 0,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT,
    CHECK ((role = 'operator') = (account_id IS NULL))
);
