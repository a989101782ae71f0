-- When each site's agent was last connected to a collector (written every 30 s by each
-- collector for the agents it serves; the latest wins).
CREATE TABLE site_presence (
    site_id           TEXT PRIMARY KEY REFERENCES sites (id),
    last_connected_at TEXT NOT NULL
);
