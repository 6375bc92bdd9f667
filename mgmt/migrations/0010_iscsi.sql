-- The iSCSI configuration (iSCSIConfig / iSCSIConfigChange). The base
-- name is meta 'iscsi_base_name'. A target is one volume's; its
-- controller is the keel_iscsi that serves it (0 while it has no export),
-- and the volume is attached read-write to client 0x4000 + controller.
CREATE TABLE iscsi_portal_groups (
	id   INTEGER PRIMARY KEY AUTOINCREMENT,
	name TEXT NOT NULL UNIQUE
);
CREATE TABLE iscsi_pg_networks (
	pg_id   INTEGER NOT NULL REFERENCES iscsi_portal_groups(id) ON DELETE CASCADE,
	address TEXT NOT NULL,
	prefix  INTEGER NOT NULL,
	PRIMARY KEY (pg_id, address, prefix)
);
CREATE TABLE iscsi_portals (
	ip         TEXT NOT NULL,
	port       INTEGER NOT NULL,
	pg_id      INTEGER NOT NULL REFERENCES iscsi_portal_groups(id) ON DELETE CASCADE,
	controller INTEGER NOT NULL,
	PRIMARY KEY (ip, port)
);
CREATE TABLE iscsi_targets (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	volume_id  INTEGER NOT NULL UNIQUE REFERENCES volumes(id) ON DELETE CASCADE,
	name       TEXT NOT NULL UNIQUE,
	controller INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE iscsi_initiators (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	name     TEXT NOT NULL UNIQUE,
	username TEXT NOT NULL DEFAULT '',
	secret   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE iscsi_initiator_nets (
	initiator_id INTEGER NOT NULL REFERENCES iscsi_initiators(id) ON DELETE CASCADE,
	net          TEXT NOT NULL,
	PRIMARY KEY (initiator_id, net)
);
CREATE TABLE iscsi_exports (
	initiator_id INTEGER NOT NULL REFERENCES iscsi_initiators(id) ON DELETE CASCADE,
	target_id    INTEGER NOT NULL REFERENCES iscsi_targets(id) ON DELETE CASCADE,
	pg_id        INTEGER NOT NULL REFERENCES iscsi_portal_groups(id) ON DELETE CASCADE,
	PRIMARY KEY (initiator_id, target_id, pg_id)
);
-- What each controller last reported (iSCSIControllerReport): its live
-- sessions and interfaces, as JSON.
CREATE TABLE iscsi_reports (
	controller INTEGER PRIMARY KEY,
	sessions   TEXT NOT NULL,
	interfaces TEXT NOT NULL
);
