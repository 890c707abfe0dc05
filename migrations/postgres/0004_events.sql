-- The delivery trace (DESIGN §6): per link, the ring of its last events (a JSON array,
-- oldest first, trimmed to 50 at every append), counters that replicas add to
-- atomically, and the last fetch and send even when they left the ring.
CREATE TABLE IF NOT EXISTS link_events (
    id text COLLATE "C" PRIMARY KEY,
    ring jsonb NOT NULL DEFAULT '[]'::jsonb,
    fetches bigint NOT NULL DEFAULT 0,
    cache_hits bigint NOT NULL DEFAULT 0,
    upstream_fetches bigint NOT NULL DEFAULT 0,
    fetch_errors bigint NOT NULL DEFAULT 0,
    bytes_served bigint NOT NULL DEFAULT 0,
    gateway_fetches bigint NOT NULL DEFAULT 0,
    preview_fetches bigint NOT NULL DEFAULT 0,
    sends bigint NOT NULL DEFAULT 0,
    sends_delivered bigint NOT NULL DEFAULT 0,
    last_fetch jsonb,
    last_send jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The web page lists the most recently created links.
CREATE INDEX IF NOT EXISTS links_created ON links (created_at);
