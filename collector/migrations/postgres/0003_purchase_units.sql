-- R32: purchases are in the license's unit. Each over-usage keeps the smallest purchase that
-- covers it; NULL marks a row stored before, which the collector fills at start
-- (`usage::overusage::upgrade_units`), converting a pool resolution from bit/s to Mbps.
ALTER TABLE overusages ADD COLUMN required_purchase BIGINT;
-- What the operator should review about a row the upgrade found (a Data Lake True-Forward
-- license created in events per hour); NULL when there is nothing to review.
ALTER TABLE overusages ADD COLUMN review TEXT;
