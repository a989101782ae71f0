-- A dirty day being recomputed is claimed until this time (R30): another collector takes it only
-- after (its claimant died mid-way). NULL: not claimed.
ALTER TABLE dirty_days ADD COLUMN claimed_until TEXT;
