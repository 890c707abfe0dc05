-- The link table and the store's own settings (DESIGN §6); mirrors the SQLite schema
-- so export/import and the Store trait see the same records in both stores.
-- Pinned blobs and delivery events come in later migrations.

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE links (
    -- "C": ids sort bytewise, as in SQLite and `LinkId`, and paging by id uses the index.
    id             text COLLATE "C" PRIMARY KEY,
    url            text NOT NULL,
    kind           text NOT NULL,
    created_at     bigint NOT NULL,
    expires_at     bigint,
    convert        boolean,
    content_type   text,
    bytes          bigint,
    converted_from text
);
