-- The person an API token belongs to, shown in order histories and recipient changes.
ALTER TABLE api_tokens ADD COLUMN person_name TEXT;
ALTER TABLE api_tokens ADD COLUMN person_email TEXT;

-- Every change of an account's notification recipients, with who made it and when.
CREATE TABLE recipient_changes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    change     TEXT NOT NULL CHECK (change IN ('added', 'removed')),
    actor      TEXT NOT NULL,
    at         TEXT NOT NULL
);
CREATE INDEX recipient_changes_by_account ON recipient_changes (account_id, id);
