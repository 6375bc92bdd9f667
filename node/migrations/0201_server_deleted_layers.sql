-- Layers (object namespaces) whose objects the server deleted for space
-- reclaim: a create or write to one of them afterwards is refused, so a
-- late or stale writer cannot re-create objects nobody would reclaim.
-- Layer ids are never reused.
CREATE TABLE server_deleted_layers (
	layer INTEGER PRIMARY KEY
) STRICT;
