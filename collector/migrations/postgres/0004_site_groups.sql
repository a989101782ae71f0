-- R31: a site's country, and so its region group, has a history. Each row is in force from its
-- day (00:00 UTC) until the next row's; the first, from the beginning ('0001-01-01'). `sites`
-- keeps the country in force today.
CREATE TABLE site_groups (
    site_id        TEXT COLLATE "C" NOT NULL REFERENCES sites (id),
    effective_from TEXT COLLATE "C" NOT NULL,
    country        TEXT COLLATE "C" NOT NULL,
    region_group   TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, effective_from)
);
INSERT INTO site_groups (site_id, effective_from, country, region_group)
    SELECT id, '0001-01-01', country, region_group FROM sites;
