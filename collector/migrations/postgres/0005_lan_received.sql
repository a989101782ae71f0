-- R33: a LAN sighting of a finalized month is stored and counted as late, never billed: when it
-- first arrived tells. NULL for the rows stored before.
ALTER TABLE lan_sightings ADD COLUMN received_at TEXT;
