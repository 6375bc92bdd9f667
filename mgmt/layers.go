package mgmt

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"keel/mgmt/apiclient"
)

// ObjectSize is the size of the objects volumes are cut into; the disks
// are initialised with the same (server.object_size).
const ObjectSize = 32 << 20

// layerOf returns the object namespace of volume or snapshot id.
func layerOf(q rowQueryer, id int64) (int64, error) {
	var layer int64
	err := q.QueryRow(`SELECT layer FROM volume_layers WHERE volume_id = ?`, id).Scan(&layer)
	if errors.Is(err, sql.ErrNoRows) {
		return id, nil
	}
	return layer, err
}

func (t *txn) setLayer(id, layer int64) error {
	_, err := t.tx.Exec(`INSERT INTO volume_layers (volume_id, layer) VALUES (?, ?)
		ON CONFLICT(volume_id) DO UPDATE SET layer = excluded.layer`, id, layer)
	return err
}

// freshLayer gives volume v a new, never used object namespace: its
// blocks read through its parent from now on.
func (t *txn) freshLayer(v *volRow) error {
	id, _, err := t.nextObject()
	if err != nil {
		return err
	}
	return t.setLayer(v.ID, id)
}

// layerChain returns the object namespaces a volume reads through: its
// own, then its parent's, and so on up the chain.
func layerChain(q rowQueryer, v *volRow) ([]uint64, error) {
	var out []uint64
	for cur := v; ; {
		l, err := layerOf(q, cur.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, uint64(l))
		if cur.ParentID == 0 {
			return out, nil
		}
		p, err := lookupVolByID(q, cur.ParentID)
		if err != nil {
			return nil, fmt.Errorf("volume %s: parent %d: %w", cur.displayName(), cur.ParentID, err)
		}
		if len(out) > 4096 {
			return nil, fmt.Errorf("volume %s: parent chain loops", v.displayName())
		}
		cur = p
	}
}

// readClientVolumes answers ClientVolumes/<clientId>: the client's
// attachments with everything its engine needs, and where their disks are.
func readClientVolumes(db *sql.DB, arg string) (any, error) {
	client, err := strconv.Atoi(arg)
	if err != nil {
		return nil, apiErr(ErrInvalidParam, "client id %q is not a number", arg)
	}
	rows, err := db.Query(`SELECT volume_id, rights FROM attachments WHERE client_id = ? ORDER BY volume_id`, client)
	if err != nil {
		return nil, err
	}
	type att struct {
		id     int64
		rights string
	}
	var atts []att
	for rows.Next() {
		var a att
		if err := rows.Scan(&a.id, &a.rights); err != nil {
			rows.Close()
			return nil, err
		}
		atts = append(atts, a)
	}
	rows.Close()
	out := apiclient.ClientVolumes{Generation: metaInt64(db, "generation"), Volumes: []apiclient.VolumeLayout{},
		Disks: map[string]apiclient.DiskLocation{}}
	for _, a := range atts {
		v, err := lookupVolByID(db, a.id)
		if err != nil {
			return nil, err
		}
		layers, err := layerChain(db, v)
		if err != nil {
			return nil, err
		}
		sets := make([][]uint32, len(v.Sets))
		for i, s := range v.Sets {
			for _, d := range s {
				sets[i] = append(sets[i], uint32(d))
				if err := addDiskLocation(db, out.Disks, d); err != nil {
					return nil, err
				}
			}
		}
		out.Volumes = append(out.Volumes, apiclient.VolumeLayout{Name: v.Name, GlobalID: v.GID, Snapshot: v.Snapshot,
			Fence: uint64(v.ID), Layers: layers, Size: v.Size, ObjectSize: ObjectSize, DiskSets: sets,
			Token: uint64(v.Fencing), ReadOnly: a.rights != "rw" || v.Snapshot, IOPS: v.Iops, BW: v.Bw})
	}
	return out, nil
}

func addDiskLocation(db *sql.DB, m map[string]apiclient.DiskLocation, disk int) error {
	key := strconv.Itoa(disk)
	if _, ok := m[key]; ok {
		return nil
	}
	var server int
	var left int64
	var state, addr, status string
	err := db.QueryRow(`SELECT d.server_id, d.state, d.generation_left, COALESCE(s.addr, ''), COALESCE(s.status, 'down')
		FROM disks d LEFT JOIN services s ON s.type = 'server' AND s.id = d.server_id WHERE d.id = ?`, disk).
		Scan(&server, &state, &left, &addr, &status)
	if errors.Is(err, sql.ErrNoRows) {
		m[key] = apiclient.DiskLocation{}
		return nil
	}
	if err != nil {
		return err
	}
	running := status == "running" && addr != ""
	m[key] = apiclient.DiskLocation{Server: uint32(server), Addr: addr, State: state, GenerationLeft: left,
		Up: state == "up" && running, Recovering: state == "recovering" && running}
	return nil
}

func metaInt64(db *sql.DB, key string) int64 {
	n, _ := metaInt(db, key)
	return n
}

// openOn returns the clients whose last heartbeat reported volume gid open
// (an NBD export with connections).
func (s *Service) openOn(gid string) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for key, hb := range s.seen {
		var c int
		if _, err := fmt.Sscanf(key, "client/%d", &c); err == nil && slices.Contains(hb.open, gid) {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out
}

// checkDetachOpen refuses, before anything is committed, to detach a
// volume from a client that reports its export open, unless forced.
func (s *Service) checkDetachOpen(call string, body []byte) error {
	var rs []ReassignDesc
	if call == "VolumesReassignWait" {
		var w ReassignWaitDesc
		if json.Unmarshal(body, &w) != nil {
			return nil // the command's own decoding reports it
		}
		rs = w.Reassign
	} else if json.Unmarshal(body, &rs) != nil {
		return nil
	}
	for _, r := range rs {
		ids, all, err := parseDetach(r.Detach)
		if err != nil || r.Force || (len(ids) == 0 && !all) {
			continue
		}
		ref, snap := r.Volume, false
		if r.Snapshot != "" {
			ref, snap = r.Snapshot, true
		}
		out, err := s.store.read(func(db queryDB) (any, error) { return lookupVol(db, ref, snap) })
		if err != nil {
			continue
		}
		v := out.(*volRow)
		for _, c := range s.openOn(v.GID) {
			if all || slices.Contains(ids, c) {
				return apiErr(ErrInUse, "volume %s is open on client %d (its NBD export has connections); close it there or detach with force", v.displayName(), c)
			}
		}
	}
	return nil
}

// waitSnapshotSwitch makes VolumeSnapshot of an attached volume return
// once the read-write client has switched the volume to its fresh layer:
// it drains the writes in flight and flushes them into the snapshot first,
// so the snapshot is a crash-consistent image and every write after the
// call returned lands in the volume only.
func (s *Service) waitSnapshotSwitch(ctx context.Context, ref string, gen int64) error {
	out, err := s.store.read(func(db queryDB) (any, error) {
		v, err := lookupVol(db, ref, false)
		if err != nil {
			return nil, err
		}
		var c int
		err = db.QueryRow(`SELECT client_id FROM attachments WHERE volume_id = ? AND rights = 'rw'`, v.ID).Scan(&c)
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil
		}
		return c, err
	})
	if err != nil || out.(int) == 0 {
		return err
	}
	c := out.(int)
	s.mu.Lock()
	_, writing := s.clientMayWrite(c)
	s.mu.Unlock()
	if !writing {
		return nil // the client stopped writing: nothing is in flight
	}
	body, _ := json.Marshal(ReassignWaitDesc{Reassign: []ReassignDesc{{RW: []int{c}}}, AttachTimeout: ptr(30)})
	return s.waitClients(ctx, body, gen)
}

func ptr[T any](v T) *T { return &v }
