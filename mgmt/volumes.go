package mgmt

import (
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// volRow is one row of the volumes table: a volume or a snapshot.
type volRow struct {
	ID                                  int64
	GID, Name                           string
	Snapshot                            bool
	ParentID, OrigParent, TemplateID    int64
	Size                                int64
	Repl                                int
	PlaceAll, PlaceTail, PlaceHead      string
	Iops, Bw                            int64
	Reuse, Violation                    bool
	Tags                                map[string]string
	Created                             int64
	Sets                                [][]int
	Owns                                bool
	Fencing                             int64
	Bound, Deleted, Transient, AutoName bool
	TargetDelete                        int64
}

const volCols = `id, global_id, name, snapshot, parent_id, orig_parent, template_id, size, replication,
	place_all, place_tail, place_head, iops, bw, reuse_server, violation, tags, created, disk_sets,
	owns_sets, fencing_token, bound, deleted, transient, auto_name, target_delete`

// volColsNoSets is volCols without the disk-set table, for listings.
var volColsNoSets = strings.Replace(volCols, "disk_sets", "'[]'", 1)

type scanner interface{ Scan(...any) error }

// scanTarget collects one row's columns; finish decodes the JSON ones.
type scanTarget struct {
	v          volRow
	tags, sets string
}

func (st *scanTarget) targets() []any {
	v := &st.v
	return []any{&v.ID, &v.GID, &v.Name, &v.Snapshot, &v.ParentID, &v.OrigParent, &v.TemplateID, &v.Size, &v.Repl,
		&v.PlaceAll, &v.PlaceTail, &v.PlaceHead, &v.Iops, &v.Bw, &v.Reuse, &v.Violation, &st.tags, &v.Created, &st.sets,
		&v.Owns, &v.Fencing, &v.Bound, &v.Deleted, &v.Transient, &v.AutoName, &v.TargetDelete}
}

func (st *scanTarget) finish() (*volRow, error) {
	if st.tags != "{}" {
		if err := json.Unmarshal([]byte(st.tags), &st.v.Tags); err != nil {
			return nil, err
		}
	}
	if st.sets != "[]" {
		if err := json.Unmarshal([]byte(st.sets), &st.v.Sets); err != nil {
			return nil, err
		}
	}
	return &st.v, nil
}

func scanVol(sc scanner, extra ...any) (*volRow, error) {
	var st scanTarget
	if err := sc.Scan(append(st.targets(), extra...)...); err != nil {
		return nil, err
	}
	return st.finish()
}

func (t *txn) insertVol(v *volRow) error {
	tags, _ := json.Marshal(orEmpty(v.Tags))
	sets, _ := json.Marshal(v.Sets)
	_, err := t.tx.Exec(`INSERT INTO volumes (`+volCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		v.ID, v.GID, v.Name, v.Snapshot, v.ParentID, v.OrigParent, v.TemplateID, v.Size, v.Repl,
		v.PlaceAll, v.PlaceTail, v.PlaceHead, v.Iops, v.Bw, v.Reuse, v.Violation, string(tags), v.Created, string(sets),
		v.Owns, v.Fencing, v.Bound, v.Deleted, v.Transient, v.AutoName, v.TargetDelete)
	return err
}

func (t *txn) updateVol(v *volRow) error {
	tags, _ := json.Marshal(orEmpty(v.Tags))
	sets, _ := json.Marshal(v.Sets)
	_, err := t.tx.Exec(`UPDATE volumes SET name=?, parent_id=?, template_id=?, size=?, replication=?,
		place_all=?, place_tail=?, place_head=?, iops=?, bw=?, reuse_server=?, violation=?, tags=?, disk_sets=?,
		owns_sets=?, fencing_token=?, bound=?, deleted=?, transient=?, auto_name=?, target_delete=? WHERE id=?`,
		v.Name, v.ParentID, v.TemplateID, v.Size, v.Repl, v.PlaceAll, v.PlaceTail, v.PlaceHead, v.Iops, v.Bw,
		v.Reuse, v.Violation, string(tags), string(sets), v.Owns, v.Fencing, v.Bound, v.Deleted, v.Transient,
		v.AutoName, v.TargetDelete, v.ID)
	return err
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

type rowQueryer interface {
	QueryRow(query string, args ...any) *sql.Row
}

// lookupVol finds a volume (snapshot=false) or snapshot by name or
// ~globalId.
func lookupVol(q rowQueryer, ref string, snapshot bool) (*volRow, error) {
	var row *sql.Row
	if gid, ok := strings.CutPrefix(ref, "~"); ok {
		row = q.QueryRow(`SELECT `+volCols+` FROM volumes WHERE global_id = ? AND snapshot = ?`, gid, snapshot)
	} else {
		// name != '' lets SQLite use the partial unique index.
		row = q.QueryRow(`SELECT `+volCols+` FROM volumes WHERE name = ? AND name != '' AND snapshot = ?`, ref, snapshot)
	}
	v, err := scanVol(row)
	if errors.Is(err, sql.ErrNoRows) {
		kind := "volume"
		if snapshot {
			kind = "snapshot"
		}
		return nil, notFound("%s %s does not exist", kind, ref)
	}
	return v, err
}

func lookupVolByID(q rowQueryer, id int64) (*volRow, error) {
	return scanVol(q.QueryRow(`SELECT `+volCols+` FROM volumes WHERE id = ?`, id))
}

// displayName is the name shown for a row: ~globalId when it has none.
func (v *volRow) displayName() string {
	if v.Name == "" {
		return "~" + v.GID
	}
	return v.Name
}

func base36(n int64) string { return strconv.FormatInt(n, 36) }

func limitOr(p *Limit, cur int64) int64 {
	if p == nil {
		return cur
	}
	return int64(*p)
}

func strOr(p *string, cur string) string {
	if p == nil {
		return cur
	}
	return *p
}
