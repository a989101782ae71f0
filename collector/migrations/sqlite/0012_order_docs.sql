-- Each order's document (the Contract's JSON), kept with every change so that lists read text
-- instead of assembling items and histories on each request. The store builds the documents
-- still '{}' (orders from before this migration) when it opens.
ALTER TABLE orders ADD COLUMN doc TEXT NOT NULL DEFAULT '{}';
