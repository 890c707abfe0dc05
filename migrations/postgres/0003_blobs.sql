-- Pinned bytes (DESIGN §6): content-addressed, kept once however many links pin them.
CREATE TABLE IF NOT EXISTS blobs (
    id text COLLATE "C" PRIMARY KEY,
    bytes bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
