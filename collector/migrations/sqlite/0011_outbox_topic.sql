-- The outbox serves more than month-end notifications (R15): order confirmations and quotes
-- (R23) too. Its `month` becomes `topic`: `2026-10` for a month's over-usage, `order 12` for an
-- order's confirmation, `order 12 quote 3` for a quote. One row per topic, channel and recipient.
ALTER TABLE outbox RENAME COLUMN month TO topic;
