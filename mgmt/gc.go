package mgmt

import (
	"database/sql"
	"strconv"

	"keel/mgmt/apiclient"
)

// Space reclaim. When a volume or snapshot row is deleted (and no child
// needs it any more, see remove) or a revert replaces a volume's layer,
// the layer is recorded in gc_layers for every disk of the row's disk
// sets. Each server polls LayersToDelete for its disks, deletes the
// layers' objects and confirms with LayersDeleted, which drops the rows;
// its next DiskRegister reports the space free. A disk that is down keeps
// its rows until it is back (or forgotten).

// dropLayer records volume or snapshot v's layer for deletion on the
// disks of its sets. Call it before v's row (and its volume_layers entry)
// goes, or before its layer is replaced.
func (t *txn) dropLayer(v *volRow) error {
	layer, err := layerOf(t.tx, v.ID)
	if err != nil {
		return err
	}
	seen := map[int]bool{}
	for _, set := range v.Sets {
		for _, d := range set {
			if seen[d] {
				continue
			}
			seen[d] = true
			if _, err := t.tx.Exec(`INSERT OR IGNORE INTO gc_layers (layer, disk_id, since) VALUES (?, ?, ?)`,
				layer, d, t.cmd.Time); err != nil {
				return err
			}
		}
	}
	return nil
}

// readLayersToDelete answers LayersToDelete/<serverId>. An ejected disk's
// layers wait until it registers again (or is forgotten), so that a disk
// its server cannot delete on does not hold up the others.
func readLayersToDelete(db *sql.DB, arg string) (any, error) {
	server, err := strconv.Atoi(arg)
	if err != nil {
		return nil, apiErr(ErrInvalidParam, "server id %q is not a number", arg)
	}
	rows, err := db.Query(`SELECT g.disk_id, g.layer FROM gc_layers g JOIN disks d ON d.id = g.disk_id
		WHERE d.server_id = ? AND d.state != 'ejected' ORDER BY g.since, g.layer LIMIT ?`, server, apiclient.MaxLayersToDelete)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := apiclient.LayersToDelete{Disks: map[string][]uint64{}}
	for rows.Next() {
		var disk int
		var layer int64
		if err := rows.Scan(&disk, &layer); err != nil {
			return nil, err
		}
		key := strconv.Itoa(disk)
		out.Disks[key] = append(out.Disks[key], uint64(layer))
	}
	return out, rows.Err()
}

func decodeLayersDeleted(body []byte) (any, error) {
	var r apiclient.LayersDeleted
	if err := decodeStrict(body, &r); err != nil {
		return nil, err
	}
	if r.Disk < 0 || r.Disk > maxDiskID {
		return nil, invalidParam("disk", "%d is out of range 0..%d", r.Disk, maxDiskID)
	}
	return &r, nil
}

// cmdLayersDeleted drops the confirmed rows. Confirming a layer that is
// not pending (a retry) is fine.
func cmdLayersDeleted(t *txn) (any, error) {
	r, err := decodeAs[*apiclient.LayersDeleted](t)
	if err != nil {
		return nil, err
	}
	for _, l := range r.Layers {
		if _, err := t.tx.Exec(`DELETE FROM gc_layers WHERE layer = ? AND disk_id = ?`, int64(l), r.Disk); err != nil {
			return nil, err
		}
	}
	return map[string]any{"generation": t.gen}, nil
}
