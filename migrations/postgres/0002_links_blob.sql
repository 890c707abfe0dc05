-- Pinned links (DESIGN §6): the SHA-256 of the pinned bytes, counted by blob
-- collection, and the expiry sweep. Mirrors the SQLite store's second migration.
-- The blob bytes themselves get their own table in a later migration.

ALTER TABLE links ADD COLUMN blob text;
CREATE INDEX links_blob ON links (blob) WHERE blob IS NOT NULL;
CREATE INDEX links_expires ON links (expires_at) WHERE expires_at IS NOT NULL;
