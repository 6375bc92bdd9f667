-- The node's own facts: identity and small settings, one row per key.
CREATE TABLE node_meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
