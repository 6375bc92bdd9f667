-- The object namespace ("layer") each volume or snapshot writes its data
-- in, when it is not the row's own id: a snapshot takes over the layer its
-- volume had, and the volume continues in a fresh one (and so does a
-- reverted volume). Rows without an entry use their id.
CREATE TABLE volume_layers (
	volume_id INTEGER PRIMARY KEY REFERENCES volumes(id) ON DELETE CASCADE,
	layer     INTEGER NOT NULL
);
