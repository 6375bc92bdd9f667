-- keel_iscsi's node state.
-- Initiator addresses that logged in to a portal group exporting a target
-- to them, with when they were last seen; a row goes when the initiator
-- has no export left in that portal group or is deleted from the config.
CREATE TABLE iscsi_initiators_seen (
	initiator    TEXT NOT NULL,
	address      TEXT NOT NULL,
	portal_group TEXT NOT NULL,
	first_seen   INTEGER NOT NULL,
	last_seen    INTEGER NOT NULL,
	PRIMARY KEY (initiator, address, portal_group)
);
-- Persistent reservations of the volumes this controller serves, by
-- globalId (SPC-4 APTPL behaviour: they survive a restart).
CREATE TABLE iscsi_reservations (
	global_id TEXT PRIMARY KEY,
	data      BLOB NOT NULL
);
