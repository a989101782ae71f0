-- Online orders (R20-R25). An order belongs to one account and holds its items; each item keeps
-- its status and every change of it in `order_item_history` (actor and time, R22). `status` on
-- the order is its summary, kept with each change so lists filter by it. An Idempotency-Key is
-- kept with the hash of the request body it came with.
CREATE TABLE orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    status          TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash    TEXT,
    UNIQUE (account_id, idempotency_key)
);
CREATE INDEX orders_by_account ON orders (account_id, status, id);

CREATE TABLE order_items (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id INTEGER NOT NULL REFERENCES orders (id),
    item     TEXT NOT NULL,
    status   TEXT NOT NULL,
    quote    TEXT
);
CREATE INDEX order_items_by_order ON order_items (order_id, id);

CREATE TABLE order_item_history (
    item_id INTEGER NOT NULL REFERENCES order_items (id),
    seq     INTEGER NOT NULL,
    status  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      TEXT NOT NULL,
    quote   TEXT,
    PRIMARY KEY (item_id, seq)
) WITHOUT ROWID;

-- The start of a site's license; an early activation (R24) moves it. NULL: the day it was added.
ALTER TABLE sites ADD COLUMN activation_date TEXT;
