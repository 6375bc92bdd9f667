package mgmt

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"keel/mgmt/apiclient"
)

// Recovery of a disk that returns after being down (docs/ARCHITECTURE §3):
//
//  1. DiskRegister of a down disk makes it "recovering" (disk generation
//     + 1) and creates its task; the generation of that command is the
//     task's transactionId.
//  2. Clients write to recovering disks but never read from them. Once
//     every running client with a read-write attachment has reported that
//     generation (DiskReplicas says clientsReady), every write issued from
//     then on reaches the disk, and its server may start copying.
//  3. The server reports progress (DiskRecoveryProgress) and completion
//     (DiskRecoveryDone); the latter marks the disk up if the disk
//     generation still matches (it was not marked down and re-registered
//     meanwhile) and removes the task.
//
// A recovering disk that stops answering is marked down like an up one
// (DiskMarkDown, ServiceDown); its task goes with it.

// startRecovery makes disk id's recovery task, replacing any earlier one.
func (t *txn) startRecovery(id int) error {
	if err := t.endRecovery(id); err != nil {
		return err
	}
	_, err := t.tx.Exec(`INSERT INTO tasks (disk_id, transaction_id, kind) VALUES (?, ?, 'recovery')`, id, t.gen)
	return err
}

// endRecovery removes disk id's recovery task.
func (t *txn) endRecovery(id int) error {
	_, err := t.tx.Exec(`DELETE FROM tasks WHERE disk_id = ? AND kind = 'recovery'`, id)
	return err
}

// checkRecovering fails unless disk id is recovering in disk generation dg.
func (t *txn) checkRecovering(id int, dg int64) error {
	var state string
	var cur int64
	err := t.tx.QueryRow(`SELECT state, disk_generation FROM disks WHERE id = ?`, id).Scan(&state, &cur)
	if errors.Is(err, sql.ErrNoRows) {
		return notFound("disk %d does not exist", id)
	}
	if err != nil {
		return err
	}
	if state != "recovering" || cur != dg {
		return apiErr(ErrNotAllowed, "disk %d is %s in disk generation %d, not recovering in %d; its server starts the recovery again from DiskReplicas", id, state, cur, dg)
	}
	return nil
}

func cmdDiskRecoveryProgress(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	r, err := decodeAs[*apiclient.DiskRecoveryProgress](t)
	if err != nil {
		return nil, err
	}
	if err := t.checkRecovering(id, r.DiskGeneration); err != nil {
		return nil, err
	}
	_, err = t.tx.Exec(`UPDATE tasks SET all_objects = ?, completed = ?, dispatched = ? WHERE disk_id = ? AND kind = 'recovery'`,
		r.All, r.Done, r.Dispatched, id)
	return nil, err
}

func cmdDiskRecoveryDone(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	r, err := decodeAs[*apiclient.DiskRecoveryDone](t)
	if err != nil {
		return nil, err
	}
	if err := t.checkRecovering(id, r.DiskGeneration); err != nil {
		return nil, err
	}
	if _, err := t.tx.Exec(`UPDATE disks SET state = 'up', generation_left = -1, disk_generation = disk_generation + 1 WHERE id = ?`, id); err != nil {
		return nil, err
	}
	if err := t.endRecovery(id); err != nil {
		return nil, err
	}
	// The last recovery's report, for operators and tests (KVGet).
	b, _ := json.Marshal(map[string]any{"generation": t.gen, "diskGeneration": r.DiskGeneration, "stats": r.Stats})
	if _, err := t.tx.Exec(`INSERT INTO kv (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v`,
		fmt.Sprintf("keel.recovery.disk.%d", id), string(b)); err != nil {
		return nil, err
	}
	return map[string]any{"generation": t.gen}, nil
}

func decodeRecoveryCall(call string, body []byte) (any, error) {
	switch call {
	case "DiskRecoveryProgress":
		var r apiclient.DiskRecoveryProgress
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.All < 0 || r.Done < 0 || r.Dispatched < 0 {
			return nil, invalidParam("all", "counts must not be negative")
		}
		return &r, nil
	default:
		var r apiclient.DiskRecoveryDone
		return &r, decodeStrict(body, &r)
	}
}

// readDiskReplicas answers DiskReplicas/<diskId> from the store; the
// leader adds whether the clients are ready (diskReplicas).
func readDiskReplicas(db *sql.DB, arg string) (*apiclient.DiskReplicas, error) {
	id, err := strconv.Atoi(arg)
	if err != nil || id < 0 || id > maxDiskID {
		return nil, invalidParam("diskId", "%q is not a disk id (0..%d)", arg, maxDiskID)
	}
	out := &apiclient.DiskReplicas{Generation: metaInt64(db, "generation"), Disk: uint32(id), Layers: []apiclient.LayerReplicas{},
		Disks: map[string]apiclient.DiskLocation{}, WaitingClients: []int{}}
	err = db.QueryRow(`SELECT state, disk_generation, generation_left FROM disks WHERE id = ?`, id).
		Scan(&out.State, &out.DiskGeneration, &out.GenerationLeft)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("disk %d does not exist", id)
	}
	if err != nil {
		return nil, err
	}
	err = db.QueryRow(`SELECT transaction_id FROM tasks WHERE disk_id = ? AND kind = 'recovery'`, id).Scan(&out.RecoveryFrom)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, err
	}
	rows, err := db.Query(`SELECT ` + volCols + ` FROM volumes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	var vols []*volRow
	for rows.Next() {
		v, err := scanVol(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		vols = append(vols, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for _, v := range vols {
		var sets []apiclient.ReplicaSet
		for i, set := range v.Sets {
			if !slices.Contains(set, id) {
				continue
			}
			rs := apiclient.ReplicaSet{Index: i, Peers: []uint32{}}
			for _, d := range set {
				if d == id {
					continue
				}
				rs.Peers = append(rs.Peers, uint32(d))
				if err := addDiskLocation(db, out.Disks, d); err != nil {
					return nil, err
				}
			}
			sets = append(sets, rs)
		}
		if len(sets) == 0 {
			continue
		}
		layer, err := layerOf(db, v.ID)
		if err != nil {
			return nil, err
		}
		out.Layers = append(out.Layers, apiclient.LayerReplicas{Layer: uint64(layer), Volume: v.displayName(), Snapshot: v.Snapshot,
			Objects: (v.Size + ObjectSize - 1) / ObjectSize, SetCount: len(v.Sets), Sets: sets})
	}
	return out, nil
}

// diskReplicas is DiskReplicas on the leader: the store's answer plus
// which running read-write clients have not yet reported the generation
// in which the disk became recovering.
func (s *Service) diskReplicas(arg string) (any, error) {
	out, err := s.store.read(func(db queryDB) (any, error) {
		r, err := readDiskReplicas(db, arg)
		if err != nil {
			return nil, err
		}
		rows, err := db.Query(`SELECT DISTINCT client_id FROM attachments WHERE rights = 'rw' ORDER BY client_id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		var clients []int
		for rows.Next() {
			var c int
			if err := rows.Scan(&c); err != nil {
				return nil, err
			}
			clients = append(clients, c)
		}
		return struct {
			r       *apiclient.DiskReplicas
			clients []int
		}{r, clients}, rows.Err()
	})
	if err != nil {
		return nil, err
	}
	res := out.(struct {
		r       *apiclient.DiskReplicas
		clients []int
	})
	r := res.r
	if r.State != "recovering" || r.RecoveryFrom == 0 {
		return r, nil
	}
	s.mu.Lock()
	for _, c := range res.clients {
		// A client that stopped writing has nothing in flight, and fetches
		// the disk list anew before it writes again.
		if hb, writing := s.clientMayWrite(c); writing && hb.generation < r.RecoveryFrom {
			r.WaitingClients = append(r.WaitingClients, c)
		}
	}
	s.mu.Unlock()
	r.ClientsReady = len(r.WaitingClients) == 0
	return r, nil
}
