-- Each account's contract terms (R27), oldest first, never overlapping: given by the operator,
-- or by default `default_contract_months` from the account's creation. Licenses made by orders
-- (R24) and True-Forward increases (R16) end with the term in force.
CREATE TABLE contract_terms (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    term_start TEXT NOT NULL,
    term_end   TEXT NOT NULL CHECK (term_end >= term_start),
    PRIMARY KEY (account_id, term_start)
) WITHOUT ROWID;
-- The accounts of earlier versions get the default of 12 months from their creation.
INSERT INTO contract_terms (account_id, term_start, term_end)
    SELECT id, date(created_at), date(created_at, '+12 months', '-1 day') FROM accounts;
