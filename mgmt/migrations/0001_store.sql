-- The replicated cluster store. Every row here is written only by the
-- command applier (store.go), in the order of the Raft log.
CREATE TABLE meta (
	k TEXT PRIMARY KEY,
	v TEXT NOT NULL
);
INSERT INTO meta (k, v) VALUES ('applied_index', '0'), ('generation', '0'), ('next_object_id', '1');

CREATE TABLE members (
	id        INTEGER PRIMARY KEY,
	raft_addr TEXT NOT NULL,
	api_addr  TEXT NOT NULL
);

CREATE TABLE services (
	type       TEXT NOT NULL,
	id         INTEGER NOT NULL,
	node_id    INTEGER NOT NULL,
	version    TEXT NOT NULL DEFAULT '',
	start_time INTEGER NOT NULL DEFAULT 0,
	addr       TEXT NOT NULL DEFAULT '',
	status     TEXT NOT NULL,
	PRIMARY KEY (type, id)
);

CREATE TABLE disks (
	id                INTEGER PRIMARY KEY,
	server_id         INTEGER NOT NULL,
	size              INTEGER NOT NULL,
	ssd               INTEGER NOT NULL DEFAULT 0,
	model             TEXT NOT NULL DEFAULT '',
	serial            TEXT NOT NULL DEFAULT '',
	device            TEXT NOT NULL DEFAULT '',
	description       TEXT NOT NULL DEFAULT '',
	state             TEXT NOT NULL,          -- up, down, ejected
	generation_left   INTEGER NOT NULL DEFAULT -1,
	disk_generation   INTEGER NOT NULL DEFAULT 0,
	objects_count     INTEGER NOT NULL DEFAULT 0,
	objects_allocated INTEGER NOT NULL DEFAULT 0,
	objects_free      INTEGER NOT NULL DEFAULT 0,
	free_bytes        INTEGER NOT NULL DEFAULT 0,
	slots             INTEGER NOT NULL DEFAULT 0  -- replica slots the allocator placed here
);

CREATE TABLE placement_groups (
	id   INTEGER PRIMARY KEY AUTOINCREMENT,
	name TEXT NOT NULL UNIQUE
);
CREATE TABLE pg_disks (
	pg_id   INTEGER NOT NULL REFERENCES placement_groups(id) ON DELETE CASCADE,
	disk_id INTEGER NOT NULL,
	PRIMARY KEY (pg_id, disk_id)
);

CREATE TABLE fault_sets (
	name      TEXT NOT NULL,
	server_id INTEGER NOT NULL PRIMARY KEY
);

CREATE TABLE templates (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	name         TEXT NOT NULL UNIQUE,
	parent       TEXT NOT NULL DEFAULT '',
	place_all    TEXT NOT NULL DEFAULT '',
	place_tail   TEXT NOT NULL DEFAULT '',
	place_head   TEXT NOT NULL DEFAULT '',
	size         INTEGER NOT NULL DEFAULT 0,
	replication  INTEGER NOT NULL DEFAULT 0,
	reuse_server INTEGER NOT NULL DEFAULT 0,
	iops         INTEGER NOT NULL DEFAULT 0,
	bw           INTEGER NOT NULL DEFAULT 0
);

-- Volumes and snapshots. id is the object id of the globalId and is never
-- reused (meta next_object_id only grows).
CREATE TABLE volumes (
	id            INTEGER PRIMARY KEY,
	global_id     TEXT NOT NULL UNIQUE,
	name          TEXT NOT NULL,              -- '' when addressed by globalId only
	snapshot      INTEGER NOT NULL,
	parent_id     INTEGER NOT NULL DEFAULT 0,
	orig_parent   INTEGER NOT NULL DEFAULT 0,
	template_id   INTEGER NOT NULL DEFAULT 0,
	size          INTEGER NOT NULL,
	replication   INTEGER NOT NULL,
	place_all     TEXT NOT NULL DEFAULT '',
	place_tail    TEXT NOT NULL DEFAULT '',
	place_head    TEXT NOT NULL DEFAULT '',
	iops          INTEGER NOT NULL DEFAULT 0,
	bw            INTEGER NOT NULL DEFAULT 0,
	reuse_server  INTEGER NOT NULL DEFAULT 0,
	violation     INTEGER NOT NULL DEFAULT 0,
	tags          TEXT NOT NULL DEFAULT '{}',
	created       INTEGER NOT NULL,
	disk_sets     TEXT NOT NULL,              -- JSON [[diskId,...],...]
	owns_sets     INTEGER NOT NULL DEFAULT 1, -- counted in disks.slots
	fencing_token INTEGER NOT NULL DEFAULT 0,
	bound         INTEGER NOT NULL DEFAULT 0,
	deleted       INTEGER NOT NULL DEFAULT 0,
	transient     INTEGER NOT NULL DEFAULT 0,
	auto_name     INTEGER NOT NULL DEFAULT 0,
	target_delete INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX volumes_name ON volumes (snapshot, name) WHERE name != '';
CREATE INDEX volumes_parent ON volumes (parent_id);

CREATE TABLE attachments (
	volume_id INTEGER NOT NULL REFERENCES volumes(id) ON DELETE CASCADE,
	client_id INTEGER NOT NULL,
	rights    TEXT NOT NULL,                  -- rw or ro
	pos       INTEGER NOT NULL,
	PRIMARY KEY (volume_id, client_id)
);

CREATE TABLE tasks (
	id             INTEGER PRIMARY KEY AUTOINCREMENT,
	disk_id        INTEGER NOT NULL,
	transaction_id INTEGER NOT NULL,
	kind           TEXT NOT NULL,
	all_objects    INTEGER NOT NULL DEFAULT 0,
	completed      INTEGER NOT NULL DEFAULT 0,
	dispatched     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE maintenance (
	node_id INTEGER PRIMARY KEY,
	until   INTEGER NOT NULL,
	descr   TEXT NOT NULL DEFAULT ''
);

CREATE TABLE kv (
	k TEXT PRIMARY KEY,
	v TEXT NOT NULL
);
