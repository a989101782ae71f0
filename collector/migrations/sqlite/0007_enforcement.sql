-- Per-site caps (R17): every change of a site's cap takes a new policy version, from one
-- sequence over all sites, so the collector finds what changed since it last looked and pushes it.
ALTER TABLE sites ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;
