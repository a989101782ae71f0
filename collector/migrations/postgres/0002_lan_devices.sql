-- Devices sockets saw on their LANs (R29): one row per site, UTC day and hardware address
-- (`aa:bb:cc:dd:ee:ff`), with the first and last sighting (RFC 3339). Personal data: deleted
-- after `lan_device_retention_months`.
CREATE TABLE lan_sightings (
    site_id    TEXT COLLATE "C" NOT NULL REFERENCES sites (id),
    day        TEXT COLLATE "C" NOT NULL,
    month      TEXT COLLATE "C" NOT NULL,
    mac        TEXT COLLATE "C" NOT NULL,
    first_seen TEXT COLLATE "C" NOT NULL,
    last_seen  TEXT COLLATE "C" NOT NULL,
    via        TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, day, mac)
);
CREATE INDEX lan_sightings_by_month ON lan_sightings (month, site_id);
CREATE INDEX lan_sightings_by_day ON lan_sightings (day);

-- Each socket's own hardware addresses, as its agent reports them: never a device of the account.
CREATE TABLE socket_addresses (
    site_id      TEXT COLLATE "C" NOT NULL REFERENCES sites (id),
    mac          TEXT COLLATE "C" NOT NULL,
    reported_day TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, mac)
);

-- The source a `device_sighting` event names (inline, lan_discovery, integration).
ALTER TABLE usage_events ADD COLUMN source TEXT COLLATE "C";
