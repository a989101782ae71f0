-- R9: the buckets of a finalized month received after it was finalized, kept as they arrive (one
-- row per bucket however often it is sent again): reading a finalized month counts its few late
-- buckets instead of scanning the month's. Filled here from the buckets stored before.
CREATE TABLE late_buckets (
    account_id   TEXT COLLATE "C" NOT NULL REFERENCES accounts (id),
    month        TEXT COLLATE "C" NOT NULL,
    site_id      TEXT COLLATE "C" NOT NULL,
    bucket_start BIGINT NOT NULL,
    PRIMARY KEY (account_id, month, site_id, bucket_start)
);

INSERT INTO late_buckets (account_id, month, site_id, bucket_start)
SELECT f.account_id, f.month, b.site_id, b.bucket_start
FROM finalized_months f
JOIN sites s ON s.account_id = f.account_id
JOIN buckets b ON b.site_id = s.id
WHERE b.bucket_start >= extract(epoch FROM (f.month || '-01')::date)::bigint
  AND b.bucket_start < extract(epoch FROM (f.month || '-01')::date + interval '1 month')::bigint
  AND coalesce(b.last_received_at, b.received_at) > f.finalized_at;
