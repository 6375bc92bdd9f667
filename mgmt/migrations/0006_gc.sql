-- Space reclaim (gc.go): object namespaces ("layers") that no volume or
-- snapshot reads any more, per disk that may hold objects of them. The
-- disk's server deletes the objects and confirms (LayersDeleted), which
-- deletes the row. A forgotten disk has nothing left to reclaim.
CREATE TABLE gc_layers (
	layer   INTEGER NOT NULL,
	disk_id INTEGER NOT NULL,
	since   INTEGER NOT NULL, -- unix seconds of the deletion
	PRIMARY KEY (layer, disk_id)
);
CREATE INDEX gc_layers_disk ON gc_layers (disk_id);
CREATE TRIGGER gc_layers_disk_forgotten AFTER DELETE ON disks BEGIN
	DELETE FROM gc_layers WHERE disk_id = OLD.id;
END;
