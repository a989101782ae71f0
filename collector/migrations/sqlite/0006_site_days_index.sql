-- Reports read site_days by site (its primary key); the index by day was never used and made
-- every recomputed day cost one more b-tree write.
DROP INDEX site_days_by_day;
