-- Disks this node's server owns, recorded by `keel disk init`.
CREATE TABLE server_disks (
	id         INTEGER PRIMARY KEY,
	path       TEXT NOT NULL,
	cluster_id TEXT NOT NULL,
	ssd        INTEGER NOT NULL,
	size       INTEGER NOT NULL,
	created    TEXT NOT NULL
) STRICT;

-- The newest fencing token the server has seen per volume: a write with an
-- older one is refused, also after a restart.
CREATE TABLE server_fencing (
	volume INTEGER PRIMARY KEY,
	token  INTEGER NOT NULL
) STRICT;
