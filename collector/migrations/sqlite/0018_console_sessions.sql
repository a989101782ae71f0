-- The web console's sessions: the hash of the session cookie's secret, the hash of the API token
-- that signed in (the caller is resolved from it at every request, so revoking the token ends
-- its sessions), the session's form token (CSRF), and when it expires.
CREATE TABLE console_sessions (
    id_hash    TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;
