package mgmt

import (
	"database/sql"
	"encoding/json"
	"strconv"
)

// listAllVols lists every volume or snapshot for VolumesList and
// SnapshotsList. Parent, template and child names come from small maps
// read first instead of joins per row: with 10,000 volumes the joins cost
// as much as the scan itself.
func listAllVols(db *sql.DB, snapshots bool) (volumeList, error) {
	names := map[int64]string{} // snapshot id -> display name
	rows, err := db.Query(`SELECT id, name, global_id FROM volumes WHERE snapshot = 1`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var name, gid string
		if err := rows.Scan(&id, &name, &gid); err != nil {
			rows.Close()
			return nil, err
		}
		names[id] = displayName(name, gid)
	}
	rows.Close()
	tpls := map[int64]string{}
	rows, err = db.Query(`SELECT id, name FROM templates`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id int64
		var name string
		if err := rows.Scan(&id, &name); err != nil {
			rows.Close()
			return nil, err
		}
		tpls[id] = name
	}
	rows.Close()
	onVolume := map[int64]string{} // snapshot id -> its first child
	if snapshots {
		rows, err = db.Query(`SELECT parent_id, name, global_id FROM volumes WHERE parent_id != 0 ORDER BY id DESC`)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var parent int64
			var name, gid string
			if err := rows.Scan(&parent, &name, &gid); err != nil {
				rows.Close()
				return nil, err
			}
			onVolume[parent] = displayName(name, gid) // the lowest id wins
		}
		rows.Close()
	}
	var count int
	if err := db.QueryRow(`SELECT COUNT(*) FROM volumes WHERE snapshot = ?`, snapshots).Scan(&count); err != nil {
		return nil, err
	}
	rows, err = db.Query(`SELECT `+volColsNoSets+` FROM volumes WHERE snapshot = ? ORDER BY id`, snapshots)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(volumeList, 0, count)
	for rows.Next() {
		v, err := scanVol(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v.summary(names[v.ParentID], tpls[v.TemplateID], onVolume[v.ID]))
	}
	return out, rows.Err()
}

func displayName(name, gid string) string {
	if name == "" {
		return "~" + gid
	}
	return name
}

// volumeList encodes like []VolumeSummary, by hand: reflection was a third
// of a 10,000-volume VolumesList.
type volumeList []VolumeSummary

// MarshalJSON writes the list.
func (l volumeList) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 512*len(l)+2)
	b = append(b, '[')
	for i := range l {
		if i > 0 {
			b = append(b, ',')
		}
		var err error
		if b, err = l[i].appendJSON(b); err != nil {
			return nil, err
		}
	}
	return append(b, ']'), nil
}

// appendJSON appends v as encoding/json would write it (same fields, same
// order).
func (v *VolumeSummary) appendJSON(b []byte) ([]byte, error) {
	num := func(k string, n int64) { b = strconv.AppendInt(append(append(b, `,"`...), k+`":`...), n, 10) }
	str := func(k, s string) { b = appendJSONString(append(append(b, `,"`...), k+`":`...), s) }
	boolean := func(k string, x bool) { b = strconv.AppendBool(append(append(b, `,"`...), k+`":`...), x) }
	b = strconv.AppendInt(append(b, `{"id":`...), v.ID, 10)
	str("name", v.Name)
	str("parentName", v.ParentName)
	str("templateName", v.TemplateName)
	num("size", v.Size)
	num("replication", int64(v.Replication))
	str("globalId", v.GlobalID)
	str("placeAll", v.PlaceAll)
	str("placeTail", v.PlaceTail)
	str("placeHead", v.PlaceHead)
	num("parentVolumeId", v.ParentVolumeID)
	num("originalParentVolumeId", v.OriginalParentID)
	num("visibleVolumeId", v.VisibleVolumeID)
	num("templateId", v.TemplateID)
	num("objectsCount", v.ObjectsCount)
	num("creationTimestamp", v.CreationTimestamp)
	num("flags", int64(v.Flags))
	b = append(b, `,"tags":`...)
	if len(v.Tags) == 0 {
		b = append(b, `{}`...)
	} else {
		t, err := json.Marshal(v.Tags)
		if err != nil {
			return nil, err
		}
		b = append(b, t...)
	}
	boolean("reuseServer", v.ReuseServer)
	for _, l := range []struct {
		k string
		v Limit
	}{{"bw", v.Bw}, {"iops", v.Iops}} {
		b = append(append(append(b, `,"`...), l.k...), `":`...)
		if l.v == 0 {
			b = append(b, `"-"`...)
		} else {
			b = strconv.AppendInt(b, int64(l.v), 10)
		}
	}
	if v.OnVolume != nil {
		str("onVolume", *v.OnVolume)
	}
	for _, f := range []struct {
		k string
		v *bool
	}{{"autoName", v.AutoName}, {"bound", v.Bound}, {"deleted", v.Deleted}, {"transient", v.Transient}} {
		if f.v != nil {
			boolean(f.k, *f.v)
		}
	}
	boolean("placementViolation", v.PlacementViolation)
	num("fencingToken", v.FencingToken)
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string; names are plain ASCII, so
// the slow path (encoding/json's escaping) is for anything else.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}
