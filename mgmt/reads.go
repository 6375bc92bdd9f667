package mgmt

import (
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// reads maps a read call to its handler. arg is the path argument.
var reads = map[string]func(db *sql.DB, arg string) (any, error){
	"ServersList":            readServersList,
	"iSCSIConfig":            readISCSIConfig,
	"iSCSISessionsInfo":      readISCSISessions,
	"iSCSInterfacesInfo":     readISCSIInterfaces,
	"NetworkPeersList":       readNetworkPeers,
	"DisksList":              readDisksList,
	"DiskDescribe":           readDiskDescribe,
	"PlacementGroupsList":    readPlacementGroups,
	"PlacementGroupDescribe": readPlacementGroupDescribe,
	"FaultSetsList":          readFaultSets,
	"VolumeTemplatesList":    readTemplates,
	"VolumeTemplateDescribe": readTemplateDescribe,
	"VolumeTemplatesStatus":  readTemplatesStatus,
	"VolumesList":            func(db *sql.DB, _ string) (any, error) { return listAllVols(db, false) },
	"SnapshotsList":          func(db *sql.DB, _ string) (any, error) { return listAllVols(db, true) },
	"VolumeListSnapshots":    func(db *sql.DB, _ string) (any, error) { return listAllVols(db, true) },
	"Volume":                 func(db *sql.DB, arg string) (any, error) { return describeVol(db, arg, false) },
	"VolumeDescribe":         func(db *sql.DB, arg string) (any, error) { return describeVol(db, arg, false) },
	"Snapshot":               func(db *sql.DB, arg string) (any, error) { return describeVol(db, arg, true) },
	"SnapshotDescribe":       func(db *sql.DB, arg string) (any, error) { return describeVol(db, arg, true) },
	"VolumeGetInfo":          readVolumeInfo,
	"VolumesGetStatus":       readVolumesStatus,
	"AttachmentsList":        readAttachments,
	"TasksList":              readTasks,
	"KVList":                 readKVList,
	"KVGet":                  readKVGet,
	"NodeStopCheck":          readNodeStopCheck,
	"ClientVolumes":          readClientVolumes,
	"LayersToDelete":         readLayersToDelete,
}

const diskCols = `id, server_id, size, ssd, model, serial, device, description, state, generation_left, disk_generation,
	objects_count, objects_allocated, objects_free, free_bytes, ` + scrubCols

func scanDisk(sc scanner) (DiskSummary, error) {
	var d DiskSummary
	var scrub scrubRow
	err := sc.Scan(append([]any{&d.ID, &d.ServerID, &d.Size, &d.SSD, &d.Model, &d.Serial, &d.Device, &d.Description, &d.State,
		&d.GenerationLeft, &d.DiskGeneration, &d.ObjectsCount, &d.ObjectsAllocated, &d.ObjectsFree, &d.FreeBytes}, scrub.dest()...)...)
	d.DiskScrub = scrubSummary(&scrub)
	d.Up = d.State == "up"
	d.SoftEject = "off"
	d.SectorsCount = d.Size / sectorSize
	d.Empty = d.ObjectsAllocated == 0
	d.ObjectsOnDisk = d.Size - d.FreeBytes
	return d, err
}

func readDisksList(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT ` + diskCols + ` FROM disks ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]DiskSummary{}
	for rows.Next() {
		d, err := scanDisk(rows)
		if err != nil {
			return nil, err
		}
		out[strconv.Itoa(d.ID)] = d
	}
	return out, rows.Err()
}

func readDiskDescribe(db *sql.DB, arg string) (any, error) {
	id, err := strconv.Atoi(arg)
	if err != nil {
		return nil, invalidParam("diskId", "%q is not a disk id", arg)
	}
	d, err := scanDisk(db.QueryRow(`SELECT `+diskCols+` FROM disks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("disk %d does not exist", id)
	}
	return d, err
}

func readServersList(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT id, node_id, version, start_time, status, addr FROM services WHERE type = 'server' ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var id, nodeID int
		var version, status, addr string
		var start int64
		if err := rows.Scan(&id, &nodeID, &version, &start, &status, &addr); err != nil {
			return nil, err
		}
		out[strconv.Itoa(id)] = map[string]any{"id": id, "nodeId": nodeID, "version": version, "startTime": start,
			"status": status, "missingDisks": []int{}, "pendingDisks": []int{}, "addr": addr}
	}
	return out, rows.Err()
}

// ServicesList is built by the API (it also knows the mgmt members'
// liveness); this reads the registered data services by type.
func readServices(db *sql.DB) (map[string]map[string]any, error) {
	out := map[string]map[string]any{"servers": {}, "clients": {}, "bridges": {}, "iscsi": {}}
	plural := map[string]string{"server": "servers", "client": "clients", "bridge": "bridges", "iscsi": "iscsi"}
	rows, err := db.Query(`SELECT type, id, node_id, version, start_time, status, addr FROM services ORDER BY type, id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var typ, version, status, addr string
		var id, nodeID int
		var start int64
		if err := rows.Scan(&typ, &id, &nodeID, &version, &start, &status, &addr); err != nil {
			return nil, err
		}
		e := map[string]any{"id": id, "nodeId": nodeID, "version": version, "startTime": start, "status": status}
		if typ == "server" {
			e["missingDisks"], e["pendingDisks"] = []int{}, []int{}
		}
		out[plural[typ]][strconv.Itoa(id)] = e
	}
	return out, rows.Err()
}

func readNetworkPeers(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT DISTINCT node_id, status FROM services ORDER BY node_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]any{}
	for rows.Next() {
		var nodeID int
		var status string
		if err := rows.Scan(&nodeID, &status); err != nil {
			return nil, err
		}
		up := status == "running"
		if prev, ok := out[strconv.Itoa(nodeID)].(map[string]any); ok && prev["joined"] == true {
			continue
		}
		bs, cs := "NODE_DOWN", "CNODE_DOWN"
		if up {
			bs, cs = "NODE_UP", "CNODE_UP"
		}
		out[strconv.Itoa(nodeID)] = map[string]any{"beaconStatus": bs, "clusterStatus": cs, "joined": up,
			"networks": map[string]any{}, "rdma": map[string]any{}, "nonVoting": false}
	}
	return out, rows.Err()
}

func readPlacementGroups(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT g.id, g.name, d.disk_id FROM placement_groups g LEFT JOIN pg_disks d ON d.pg_id = g.id ORDER BY g.name, d.disk_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*PlacementGroup{}
	for rows.Next() {
		var id int64
		var name string
		var disk sql.NullInt64
		if err := rows.Scan(&id, &name, &disk); err != nil {
			return nil, err
		}
		g, ok := out[name]
		if !ok {
			g = &PlacementGroup{ID: id, Name: name, Disks: []int{}}
			out[name] = g
		}
		if disk.Valid {
			g.Disks = append(g.Disks, int(disk.Int64))
		}
	}
	return out, rows.Err()
}

func readPlacementGroupDescribe(db *sql.DB, arg string) (any, error) {
	all, err := readPlacementGroups(db, "")
	if err != nil {
		return nil, err
	}
	g, ok := all.(map[string]*PlacementGroup)[arg]
	if !ok {
		return nil, notFound("placement group %s does not exist", arg)
	}
	return g, nil
}

func readFaultSets(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT name, server_id FROM fault_sets ORDER BY name, server_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]*FaultSet{}
	for rows.Next() {
		var name string
		var s int
		if err := rows.Scan(&name, &s); err != nil {
			return nil, err
		}
		if out[name] == nil {
			out[name] = &FaultSet{Name: name, Servers: []int{}}
		}
		out[name].Servers = append(out[name].Servers, s)
	}
	return out, rows.Err()
}

func (tpl *templateRow) desc() TemplateDesc {
	d := TemplateDesc{ID: tpl.ID, Name: tpl.Name, ParentName: tpl.Parent, PlaceAll: tpl.PlaceAll, PlaceTail: tpl.PlaceTail,
		PlaceHead: tpl.PlaceHead, Size: "-", Replication: "-", ReuseServer: tpl.Reuse, VolumeLimits: VolumeLimits{Bw: Limit(tpl.Bw), Iops: Limit(tpl.Iops)}}
	if tpl.Size != 0 {
		d.Size = tpl.Size
	}
	if tpl.Repl != 0 {
		d.Replication = tpl.Repl
	}
	return d
}

func readTemplates(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT ` + templateCols + ` FROM templates ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []TemplateDesc{}
	for rows.Next() {
		tpl, err := scanTemplate(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, tpl.desc())
	}
	return out, rows.Err()
}

func readTemplateDescribe(db *sql.DB, arg string) (any, error) {
	tpl, err := lookupTemplate(db, arg)
	if err != nil {
		return nil, err
	}
	return tpl.desc(), nil
}

func readTemplatesStatus(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT t.id, t.name, t.place_all, t.place_tail, t.place_head, t.replication,
		(SELECT COUNT(*) FROM volumes v WHERE v.template_id = t.id AND v.snapshot = 0),
		(SELECT COUNT(*) FROM volumes v WHERE v.template_id = t.id AND v.snapshot = 1),
		(SELECT COUNT(*) FROM volumes v WHERE v.template_id = t.id AND v.snapshot = 1 AND v.deleted = 1),
		(SELECT COALESCE(SUM(size), 0) FROM volumes v WHERE v.template_id = t.id AND v.snapshot = 0),
		(SELECT COALESCE(SUM(size * replication), 0) FROM volumes v WHERE v.template_id = t.id AND v.snapshot = 0)
		FROM templates t ORDER BY t.name`)
	if err != nil {
		return nil, err
	}
	type st struct {
		id                          int64
		name, all, tail, head       string
		repl, vols, snaps, removing int
		size, total                 int64
	}
	var list []st
	for rows.Next() {
		var s st
		if err := rows.Scan(&s.id, &s.name, &s.all, &s.tail, &s.head, &s.repl, &s.vols, &s.snaps, &s.removing, &s.size, &s.total); err != nil {
			rows.Close()
			return nil, err
		}
		list = append(list, s)
	}
	rows.Close()
	space := func(group string) (free, capacity int64) {
		q := `SELECT COALESCE(SUM(free_bytes), 0), COALESCE(SUM(size), 0) FROM disks WHERE state = 'up'`
		args := []any{}
		if group != "" {
			q += ` AND id IN (SELECT disk_id FROM pg_disks JOIN placement_groups g ON g.id = pg_id WHERE g.name = ?)`
			args = append(args, group)
		}
		db.QueryRow(q, args...).Scan(&free, &capacity)
		return
	}
	out := []map[string]any{}
	for _, s := range list {
		af, ac := space(s.all)
		tf, tc := space(s.tail)
		hf, hc := space(s.head)
		var repl any = "-"
		if s.repl != 0 {
			repl = s.repl
		}
		entry := func(f, c int64) map[string]any { return map[string]any{"free": f, "capacity": c} }
		out = append(out, map[string]any{"id": s.id, "name": s.name, "placeAll": s.all, "placeTail": s.tail, "placeHead": s.head,
			"replication": repl, "volumesCount": s.vols, "snapshotsCount": s.snaps, "removingSnapshotsCount": s.removing,
			"size": s.size, "totalSize": s.total, "onDiskSize": 0, "storedSize": 0,
			"availablePlaceAll": af, "availablePlaceTail": tf, "availablePlaceHead": hf,
			"capacityPlaceAll": ac, "capacityPlaceTail": tc, "capacityPlaceHead": hc,
			"stored": map[string]any{"free": min(af, tf), "capacity": min(ac, tc), "placeAll": entry(af, ac), "placeTail": entry(tf, tc), "placeHead": entry(hf, hc)}})
	}
	return out, nil
}

// summary turns a row into its API form; names maps ids to display names
// of parents, templates the template ids to names.
func (v *volRow) summary(parentName, tplName, onVolume string) VolumeSummary {
	s := VolumeSummary{ID: v.ID, Name: v.displayName(), ParentName: parentName, TemplateName: tplName, Size: v.Size,
		Replication: v.Repl, GlobalID: v.GID, PlaceAll: v.PlaceAll, PlaceTail: v.PlaceTail, PlaceHead: v.PlaceHead,
		ParentVolumeID: v.ParentID, OriginalParentID: v.OrigParent, VisibleVolumeID: v.ID, TemplateID: v.TemplateID,
		ObjectsCount: (v.Size + defaultObjSize - 1) / defaultObjSize, CreationTimestamp: v.Created, Tags: orEmpty(v.Tags),
		ReuseServer: v.Reuse, VolumeLimits: VolumeLimits{Bw: Limit(v.Bw), Iops: Limit(v.Iops)},
		PlacementViolation: v.Violation, FencingToken: v.Fencing}
	if v.Violation {
		s.Flags = 1
	}
	if v.Snapshot {
		s.OnVolume = &onVolume
		s.AutoName, s.Bound, s.Deleted, s.Transient = &v.AutoName, &v.Bound, &v.Deleted, &v.Transient
	}
	return s
}

// listVols lists volumes or snapshots (only ref's when ref is given).
func listVols(db *sql.DB, snapshots bool, where string, args ...any) ([]VolumeSummary, error) {
	q := `SELECT ` + prefixCols(volColsNoSets, "v") + `,
		COALESCE(CASE WHEN p.name = '' THEN '~' || p.global_id ELSE p.name END, ''), COALESCE(t.name, ''),
		CASE WHEN v.snapshot THEN COALESCE((SELECT CASE WHEN c.name = '' THEN '~' || c.global_id ELSE c.name END FROM volumes c WHERE c.parent_id = v.id LIMIT 1), '') ELSE '' END
		FROM volumes v LEFT JOIN volumes p ON p.id = v.parent_id LEFT JOIN templates t ON t.id = v.template_id
		WHERE v.snapshot = ?` + where + ` ORDER BY v.id`
	rows, err := db.Query(q, append([]any{snapshots}, args...)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var count int
	db.QueryRow(`SELECT COUNT(*) FROM volumes WHERE snapshot = ?`, snapshots).Scan(&count)
	out := make([]VolumeSummary, 0, count)
	for rows.Next() {
		var parent, tpl, onVol string
		v, err := scanVol(rows, &parent, &tpl, &onVol)
		if err != nil {
			return nil, err
		}
		out = append(out, v.summary(parent, tpl, onVol))
	}
	return out, rows.Err()
}

func prefixCols(cols, p string) string {
	parts := strings.Split(cols, ",")
	for i, c := range parts {
		c = strings.TrimSpace(c)
		if !strings.HasPrefix(c, "'") {
			c = p + "." + c
		}
		parts[i] = c
	}
	return strings.Join(parts, ", ")
}

func describeVol(db *sql.DB, ref string, snapshot bool) (any, error) {
	v, err := lookupVol(db, ref, snapshot)
	if err != nil {
		return nil, err
	}
	list, err := listVols(db, snapshot, " AND v.id = ?", v.ID)
	if err != nil || len(list) != 1 {
		return nil, fmt.Errorf("describe %s: %v", ref, err)
	}
	sets := v.Sets
	if sets == nil {
		sets = [][]int{}
	}
	objects := make([][]int, 0, list[0].ObjectsCount)
	for i := int64(0); i < list[0].ObjectsCount && len(sets) > 0; i++ {
		objects = append(objects, sets[i%int64(len(sets))])
	}
	return []VolumeDetail{{VolumeSummary: list[0], TargetDiskSets: sets, Objects: objects}}, nil
}

func readVolumeInfo(db *sql.DB, ref string) (any, error) {
	v, err := lookupVol(db, ref, false)
	if err != nil {
		return nil, err
	}
	d, err := describeVol(db, ref, false)
	if err != nil {
		return nil, err
	}
	perDisk := map[string]int{}
	var perSet []map[string]any
	objects := d.([]VolumeDetail)[0].Objects
	count := map[string]int{}
	for _, set := range objects {
		for _, dk := range set {
			perDisk[strconv.Itoa(dk)]++
		}
		count[fmt.Sprint(set)]++
	}
	for _, set := range v.Sets {
		if n, ok := count[fmt.Sprint(set)]; ok {
			perSet = append(perSet, map[string]any{"disks": set, "count": n})
			delete(count, fmt.Sprint(set))
		}
	}
	return map[string]any{"name": v.displayName(), "globalId": v.GID, "disksCount": len(perDisk), "objectsPerDisk": perDisk,
		"objectsPerChain": perSet, "objectsPerDiskSet": perSet}, nil
}

func diskStates(db *sql.DB) (map[int]string, error) {
	rows, err := db.Query(`SELECT id, state FROM disks`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var id int
		var st string
		if err := rows.Scan(&id, &st); err != nil {
			return nil, err
		}
		out[id] = st
	}
	return out, rows.Err()
}

func readVolumesStatus(db *sql.DB, _ string) (any, error) {
	states, err := diskStates(db)
	if err != nil {
		return nil, err
	}
	rows, err := db.Query(`SELECT ` + volCols + ` FROM volumes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]VolumeStatus{}
	for rows.Next() {
		v, err := scanVol(rows)
		if err != nil {
			return nil, err
		}
		st := VolumeStatus{Name: v.displayName(), Size: v.Size, Replication: v.Repl, Status: "up", Snapshot: v.Snapshot,
			DownDrives: []int{}, MissingDrives: []int{}, MissingTargetDrives: []int{}, SoftEjectingDrives: []int{}, Tags: orEmpty(v.Tags)}
		missing := map[int]bool{}
		for _, set := range v.Sets {
			up := 0
			for _, d := range set {
				if states[d] == "up" {
					up++
				} else {
					missing[d] = true
				}
			}
			if up == 0 {
				st.Status = "down"
			}
		}
		for d := range missing {
			st.MissingDrives = append(st.MissingDrives, d)
		}
		sort.Ints(st.MissingDrives)
		if st.Status == "down" {
			st.DownDrives = st.MissingDrives
		}
		st.DecreasedRedundancy = len(missing) > 0
		st.BalancerBlocked = len(missing) > 0
		out[st.Name] = st
	}
	return out, rows.Err()
}

func readAttachments(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT v.name, v.global_id, v.snapshot, v.fencing_token, a.client_id, a.rights, a.pos
		FROM attachments a JOIN volumes v ON v.id = a.volume_id ORDER BY a.client_id, a.pos`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AttachmentDesc{}
	for rows.Next() {
		var a AttachmentDesc
		var name string
		if err := rows.Scan(&name, &a.GlobalID, &a.Snapshot, &a.FencingToken, &a.Client, &a.Rights, &a.Pos); err != nil {
			return nil, err
		}
		a.Volume = name
		if name == "" {
			a.Volume = "~" + a.GlobalID
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func readTasks(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT disk_id, transaction_id, all_objects, completed, dispatched FROM tasks ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []map[string]any{}
	for rows.Next() {
		var d, tr, all, done, disp int64
		if err := rows.Scan(&d, &tr, &all, &done, &disp); err != nil {
			return nil, err
		}
		out = append(out, map[string]any{"diskId": d, "transactionId": tr, "allObjects": all, "completedObjects": done, "dispatchedObjects": disp})
	}
	return out, rows.Err()
}

func readKVList(db *sql.DB, _ string) (any, error) {
	rows, err := db.Query(`SELECT k, v FROM kv ORDER BY k`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []KVPair{}
	for rows.Next() {
		var p KVPair
		if err := rows.Scan(&p.Key, &p.Value); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func readKVGet(db *sql.DB, key string) (any, error) {
	p := KVPair{Key: key}
	err := db.QueryRow(`SELECT v FROM kv WHERE k = ?`, key).Scan(&p.Value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("key %q does not exist", key)
	}
	return p, err
}

// readNodeStopCheck answers whether stopping the storage server of a node
// would leave some object with no up replica.
func readNodeStopCheck(db *sql.DB, arg string) (any, error) {
	nodeID, err := strconv.Atoi(arg)
	if err != nil || nodeID < 0 || nodeID > 63 {
		return nil, invalidParam("nodeId", "%q is not a node id (0..63)", arg)
	}
	var res NodeStopCheck
	var until int64
	res.Maintenance = db.QueryRow(`SELECT until FROM maintenance WHERE node_id = ?`, nodeID).Scan(&until) == nil
	rows, err := db.Query(`SELECT id, server_id, state FROM disks`)
	if err != nil {
		return nil, err
	}
	upElsewhere := map[int]bool{}
	for rows.Next() {
		var id, server int
		var state string
		if err := rows.Scan(&id, &server, &state); err != nil {
			rows.Close()
			return nil, err
		}
		// A server's id is its node's id.
		upElsewhere[id] = state == "up" && server != nodeID
	}
	rows.Close()
	vrows, err := db.Query(`SELECT ` + volCols + ` FROM volumes ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer vrows.Close()
	for vrows.Next() {
		v, err := scanVol(vrows)
		if err != nil {
			return nil, err
		}
		for i, set := range v.Sets {
			ok := false
			for _, d := range set {
				ok = ok || upElsewhere[d]
			}
			if !ok {
				kind := "volume"
				if v.Snapshot {
					kind = "snapshot"
				}
				res.Reason = fmt.Sprintf("%s %s disk set %d %v would have no up replica without server %d", kind, v.displayName(), i, set, nodeID)
				return res, nil
			}
		}
	}
	res.Safe = true
	res.Reason = fmt.Sprintf("every object keeps an up replica without server %d", nodeID)
	return res, vrows.Err()
}
