package mgmt

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"keel/node"
)

const (
	apiPrefix   = "/ctrl/1.0/"
	indexHeader = "X-Keel-Index"
	maxBody     = 8 << 20
	// spaceRefresh: how long a disk's space figures in the store may lag
	// behind its server's by under 1% (diskRegister).
	spaceRefresh = 30 * time.Second
)

// writeCalls are the POST calls that become one Raft command each.
var writeCalls = map[string]bool{
	"iSCSIConfig": true, "iSCSIReport": true,
	"DiskEject": true, "DiskForget": true, "DiskSetDescription": true, "DiskRegister": true, "DiskMarkDown": true,
	"PlacementGroupUpdate": true, "PlacementGroupDelete": true, "FaultSetUpdate": true,
	"VolumeTemplateCreate": true, "VolumeTemplateUpdate": true, "VolumeTemplateDelete": true,
	"VolumeCreate": true, "VolumeUpdate": true, "VolumeDelete": true, "VolumeSnapshot": true,
	"SnapshotUpdate": true, "SnapshotDelete": true, "SnapshotDeleteById": true, "VolumeRevert": true,
	"VolumesReassign": true, "VolumesReassignWait": true, "KVSet": true, "KVDelete": true,
	"ServiceHeartbeat": true, "MgmtJoin": true,
	"DiskScrubStart": true, "DiskScrubPause": true, "DiskScrubContinue": true, "DiskScrubReport": true,
	"DiskRecoveryProgress": true, "DiskRecoveryDone": true,
	"LayersDeleted": true, "ClientTokensRenew": true,
}

// leaderReads are GET calls answered by the leader, which holds the
// services' heartbeats.
var leaderReads = map[string]bool{"ClientsConfigDump": true, "ServicesList": true, "DiskReplicas": true}

// ServeHTTP is the API: /ctrl/1.0/[MultiCluster/|RemoteCommand/<name>/]<Call>[/<arg>].
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, apiPrefix)
	if !ok {
		writeError(w, apiErr(ErrInvalidCall, "no such path %s; the API is under %s", r.URL.Path, apiPrefix))
		return
	}
	if !s.authorized(r) {
		writeError(w, apiErr(ErrAuth, "missing or wrong API token (Authorization: Storpool v1:<token> or Bearer <token>)"))
		return
	}
	path = strings.TrimPrefix(path, "MultiCluster/") // one sub-cluster: the local one
	if rest, ok := strings.CutPrefix(path, "RemoteCommand/"); ok {
		name, call, _ := strings.Cut(rest, "/")
		if name != s.store.Meta("name") {
			writeError(w, notFound("cluster %s is not known here (remote clusters arrive with the bridge)", name))
			return
		}
		path = call
	}
	call, arg, _ := strings.Cut(path, "/")
	var body []byte
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(b) > maxBody {
			writeError(w, apiErr(ErrInvalidJSON, "request body unreadable or larger than %d bytes", maxBody))
			return
		}
		body = b
	}
	switch {
	case r.Method == http.MethodGet && (reads[call] != nil || call == "ServicesList" || call == "ClusterStatus" || leaderReads[call] || call == "ClusterSecret"):
		if q := r.URL.Query().Get("json"); q != "" && !json.Valid([]byte(q)) {
			writeError(w, apiErr(ErrInvalidJSON, "the json query argument is not valid JSON"))
			return
		}
		if leaderReads[call] && !s.IsLeader() {
			s.forward(w, r, nil)
			return
		}
		s.serveRead(w, call, arg)
	case r.Method == http.MethodPost && writeCalls[call]:
		if _, err := DecodeRequest(call, body); err != nil {
			writeError(w, err)
			return
		}
		if !s.IsLeader() {
			s.forward(w, r, body)
			return
		}
		s.serveWrite(r.Context(), w, call, arg, body)
	case reads[call] != nil || writeCalls[call] || leaderReads[call]:
		writeError(w, apiErr(ErrInvalidCall, "%s %s: wrong method", r.Method, call))
	default:
		writeError(w, apiErr(ErrInvalidCall, "unknown call %q", call))
	}
}

func (s *Service) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Storpool v1:")
	if !ok {
		tok, ok = strings.CutPrefix(h, "Bearer ")
	}
	return ok && s.cfg.Token != "" && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(s.cfg.Token)) == 1
}

func (s *Service) serveRead(w http.ResponseWriter, call, arg string) {
	index := s.store.AppliedIndex()
	if cachedCalls[call] {
		if body, ok := s.lists.get(call, index); ok {
			writeRaw(w, body)
			return
		}
	}
	var data any
	var err error
	switch call {
	case "ServicesList":
		data, err = s.servicesList()
	case "ClusterStatus":
		data, err = s.clusterStatus()
	case "ClientsConfigDump":
		data, err = s.clientsConfigDump()
	case "DiskReplicas":
		data, err = s.diskReplicas(arg)
	case "ClusterSecret":
		data = map[string]string{"secret": string(s.cfg.Secret)}
	default:
		data, err = s.store.read(func(db queryDB) (any, error) { return reads[call](db, arg) })
	}
	if err != nil {
		writeError(w, err)
		return
	}
	reply := map[string]any{"generation": s.store.Generation(), "data": data}
	if cachedCalls[call] {
		body, err := json.Marshal(reply)
		if err != nil {
			writeError(w, err)
			return
		}
		s.lists.put(call, index, body)
		writeRaw(w, body)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

// serveWrite runs a write call on the leader.
func (s *Service) serveWrite(ctx context.Context, w http.ResponseWriter, call, arg string, body []byte) {
	var res Result
	var err error
	switch call {
	case "ServiceHeartbeat":
		res, err = s.heartbeat(ctx, body)
	case "MgmtJoin":
		res, err = s.join(ctx, body)
	case "DiskRegister":
		res, err = s.diskRegister(ctx, body)
	case "iSCSIReport":
		res, err = s.iscsiReport(ctx, body)
	default:
		if call == "VolumesReassign" || call == "VolumesReassignWait" {
			if err := s.checkDetachOpen(call, body); err != nil {
				writeError(w, err)
				return
			}
		}
		res, err = s.propose(ctx, Command{Op: call, Arg: arg, Body: body})
		if err == nil && call == "VolumesReassignWait" {
			err = s.waitClients(ctx, body, res.Generation)
		}
		if err == nil && call == "VolumeSnapshot" {
			err = s.waitSnapshotSwitch(ctx, arg, res.Generation)
		}
	}
	if res.Index != 0 {
		w.Header().Set(indexHeader, strconv.FormatUint(res.Index, 10))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ok := map[string]any{"ok": true, "generation": res.Generation, "info": res.Info}
	writeJSON(w, http.StatusOK, map[string]any{"generation": res.Generation, "ok": true, "info": res.Info, "data": ok})
}

// forward sends a call to the leader with the caller's own credentials and,
// for writes, waits until this node applied the write before answering, so
// that the caller's next read here sees it.
func (s *Service) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	leader, err := s.leaderAPI()
	if err != nil {
		writeError(w, err)
		return
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, leader+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, apiErr(ErrInternalError, "forward: %v", err))
		return
	}
	req.Header.Set("Authorization", r.Header.Get("Authorization"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.fwd.Do(req)
	if err != nil {
		writeError(w, &Error{Name: ErrNoLeader, Descr: fmt.Sprintf("forward to leader %s: %v; retry", leader, err), Transient: true})
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		writeError(w, &Error{Name: ErrNoLeader, Descr: fmt.Sprintf("forward to leader %s: %v; retry", leader, err), Transient: true})
		return
	}
	if idx, err := strconv.ParseUint(resp.Header.Get(indexHeader), 10, 64); err == nil {
		if err := s.waitApplied(r.Context(), idx); err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set(indexHeader, strconv.FormatUint(idx, 10))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.StatusCode)
	w.Write(b)
}

func (s *Service) heartbeat(ctx context.Context, body []byte) (Result, error) {
	var hb HeartbeatDesc
	if err := json.Unmarshal(body, &hb); err != nil {
		return Result{}, err
	}
	key := fmt.Sprintf("%s/%d", hb.Type, hb.ID)
	s.mu.Lock()
	s.seen[key] = heartbeat{at: time.Now(), generation: hb.Generation, version: hb.Version, startTime: hb.StartTime, open: hb.OpenVolumes}
	s.mu.Unlock()
	if hb.Type == "mgmt" {
		// mgmt members' liveness lives in the leader's memory only.
		gen := s.store.Generation()
		return Result{Generation: gen, Info: map[string]any{"generation": gen}}, nil
	}
	var nodeID int
	var version, addr, status string
	var start int64
	s.store.mu.RLock()
	err := s.store.db.QueryRow(`SELECT node_id, version, start_time, addr, status FROM services WHERE type = ? AND id = ?`, hb.Type, hb.ID).
		Scan(&nodeID, &version, &start, &addr, &status)
	s.store.mu.RUnlock()
	info := map[string]any{"clusterId": s.store.Meta("location_id") + "." + s.store.Meta("sub_cluster_id")}
	if err == nil && status == "running" && nodeID == hb.NodeID && version == hb.Version && start == hb.StartTime && addr == hb.Addr {
		gen := s.store.Generation()
		info["generation"] = gen
		return Result{Generation: gen, Info: info}, nil
	}
	res, err := s.propose(ctx, Command{Op: "ServiceUpdate", Body: body})
	if err != nil {
		return res, err
	}
	info["generation"] = res.Generation
	res.Info = info
	return res, nil
}

// diskRegister commits a DiskRegister unless it only repeats what the
// store holds: same server and device, a state it keeps (up, recovering,
// ejected), and space figures equal to the stored ones, or within 1% of
// them when this node committed the disk's figures less than
// spaceRefresh ago. Servers send it with every heartbeat; committing
// each change at once would raise the generation every few seconds for
// little, and never committing small ones would leave DisksList behind.
func (s *Service) diskRegister(ctx context.Context, body []byte) (Result, error) {
	var r DiskRegisterDesc
	if err := json.Unmarshal(body, &r); err != nil {
		return Result{}, err
	}
	var cur DiskSummary
	s.store.mu.RLock()
	cur, err := scanDisk(s.store.db.QueryRow(`SELECT `+diskCols+` FROM disks WHERE id = ?`, r.ID))
	s.store.mu.RUnlock()
	near := func(a, b, scale int64) bool { return scale <= 0 || 100*absDiff(a, b) < scale }
	s.mu.Lock()
	recent := time.Since(s.spaceAt[r.ID]) < spaceRefresh
	s.mu.Unlock()
	same := cur.FreeBytes == r.FreeBytes && cur.ObjectsAllocated == r.ObjectsAllocated
	if err == nil && cur.ServerID == r.ServerID && cur.Size == r.Size && cur.SSD == r.SSD && cur.Model == r.Model &&
		cur.Serial == r.Serial && cur.Device == r.Device && (cur.State == "up" || cur.State == "recovering" || cur.State == "ejected") &&
		cur.ObjectsCount == r.ObjectsCount && (same || recent && near(cur.FreeBytes, r.FreeBytes, r.Size) && near(cur.ObjectsAllocated, r.ObjectsAllocated, r.ObjectsCount)) {
		gen := s.store.Generation()
		return Result{Generation: gen, Info: map[string]any{"generation": gen, "diskGeneration": cur.DiskGeneration, "state": cur.State}}, nil
	}
	res, err := s.propose(ctx, Command{Op: "DiskRegister", Body: body})
	if err == nil {
		s.mu.Lock()
		s.spaceAt[r.ID] = time.Now()
		s.mu.Unlock()
	}
	return res, err
}

func absDiff(a, b int64) int64 {
	if a > b {
		return a - b
	}
	return b - a
}

func (s *Service) join(ctx context.Context, body []byte) (Result, error) {
	var j MgmtJoinDesc
	if err := json.Unmarshal(body, &j); err != nil {
		return Result{}, err
	}
	f := s.raft.AddVoter(raft.ServerID(strconv.Itoa(j.ID)), raft.ServerAddress(j.RaftAddr), 0, 30*time.Second)
	if err := f.Error(); err != nil {
		return Result{}, &Error{Name: ErrNoLeader, Descr: fmt.Sprintf("add voter %d at %s: %v", j.ID, j.RaftAddr, err), Transient: true}
	}
	return s.propose(ctx, Command{Op: "MgmtJoin", Body: body})
}

// waitClients waits until every client named in a VolumesReassignWait
// reported (in its heartbeat) a generation at least gen.
func (s *Service) waitClients(ctx context.Context, body []byte, gen int64) error {
	var r ReassignWaitDesc
	json.Unmarshal(body, &r)
	timeout := 60 * time.Second
	if r.AttachTimeout != nil {
		timeout = time.Duration(*r.AttachTimeout) * time.Second
	}
	clients := map[int]bool{}
	for _, d := range r.Reassign {
		for _, c := range append(append([]int{}, d.RW...), d.RO...) {
			clients[c] = true
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		var missing []int
		s.mu.Lock()
		for c := range clients {
			if hb, ok := s.seen[fmt.Sprintf("client/%d", c)]; !ok || hb.generation < gen {
				missing = append(missing, c)
			}
		}
		s.mu.Unlock()
		if len(missing) == 0 || timeout == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return &Error{Name: ErrNotReady, Descr: fmt.Sprintf("client(s) %v have not applied generation %d within %s (the attachment is committed)", missing, gen, timeout), Transient: true}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Service) servicesList() (any, error) {
	out, err := s.store.read(func(db queryDB) (any, error) { return readServices(db) })
	if err != nil {
		return nil, err
	}
	m := out.(map[string]map[string]any)
	mgmt := map[string]any{}
	cfg := s.raft.GetConfiguration()
	_, leaderID := s.raft.LeaderWithID()
	s.mu.Lock()
	grace := time.Since(s.leaderSince) < s.cfg.ServiceTimeout
	seen := maps.Clone(s.seen)
	s.mu.Unlock()
	if cfg.Error() == nil {
		for _, srv := range cfg.Configuration().Servers {
			id, _ := strconv.Atoi(string(srv.ID))
			e := map[string]any{"id": id, "nodeId": id, "version": "", "startTime": nil,
				"status": "running", "active": srv.ID == leaderID, "prio": 0}
			if id == s.cfg.NodeID {
				e["version"], e["startTime"] = node.Version, s.started.Unix()
			} else if hb, ok := seen[fmt.Sprintf("mgmt/%d", id)]; ok && time.Since(hb.at) <= s.cfg.ServiceTimeout {
				e["version"], e["startTime"] = hb.version, hb.startTime
			} else if !grace {
				e["status"] = "down"
			}
			mgmt[string(srv.ID)] = e
		}
	}
	status := "running"
	if leaderID == "" {
		status = "down"
	}
	return map[string]any{"clusterStatus": status, "mgmt": mgmt, "clients": m["clients"], "servers": m["servers"],
		"bridges": m["bridges"], "iscsi": m["iscsi"]}, nil
}

// ClusterStatusReply is the data of ClusterStatus.
type ClusterStatusReply struct {
	Name         string        `json:"name"`
	Location     string        `json:"location"`
	LocationID   string        `json:"locationId"`
	SubClusterID string        `json:"subClusterId"`
	ClusterID    string        `json:"clusterId"`
	Generation   int64         `json:"generation"`
	Leader       string        `json:"leader"`
	AppliedIndex uint64        `json:"appliedIndex"`
	Voters       []VoterStatus `json:"voters"`
}

// VoterStatus is one mgmt member in ClusterStatus.
type VoterStatus struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	APIAddr  string `json:"apiAddr"`
	Leader   bool   `json:"leader"`
	Suffrage string `json:"suffrage"`
}

func (s *Service) clusterStatus() (any, error) {
	st := ClusterStatusReply{Generation: s.store.Generation(), AppliedIndex: s.store.AppliedIndex(), Voters: []VoterStatus{}}
	s.store.mu.RLock()
	db := s.store.db
	st.Name, st.Location = metaString(db, "name"), metaString(db, "location")
	st.LocationID, st.SubClusterID = metaString(db, "location_id"), metaString(db, "sub_cluster_id")
	apis := map[string]string{}
	if rows, err := db.Query(`SELECT id, api_addr FROM members`); err == nil {
		for rows.Next() {
			var id, a string
			rows.Scan(&id, &a)
			apis[id] = a
		}
		rows.Close()
	}
	s.store.mu.RUnlock()
	if st.LocationID != "" {
		st.ClusterID = st.LocationID + "." + st.SubClusterID
	}
	_, leaderID := s.raft.LeaderWithID()
	st.Leader = string(leaderID)
	cfg := s.raft.GetConfiguration()
	if err := cfg.Error(); err != nil {
		return nil, err
	}
	for _, srv := range cfg.Configuration().Servers {
		st.Voters = append(st.Voters, VoterStatus{ID: string(srv.ID), RaftAddr: string(srv.Address), APIAddr: apis[string(srv.ID)],
			Leader: srv.ID == leaderID, Suffrage: srv.Suffrage.String()})
	}
	return st, nil
}

func (s *Service) clientsConfigDump() (any, error) {
	gen := s.store.Generation()
	out, err := s.store.read(func(db queryDB) (any, error) {
		rows, err := db.Query(`SELECT id, status FROM services WHERE type = 'client' ORDER BY id`)
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		list := []map[string]any{}
		for rows.Next() {
			var id int
			var status string
			if err := rows.Scan(&id, &status); err != nil {
				return nil, err
			}
			s.mu.Lock()
			hb := s.seen[fmt.Sprintf("client/%d", id)]
			s.mu.Unlock()
			cs := "ok"
			switch {
			case status != "running":
				cs = "down"
			case hb.generation < gen:
				cs = "updating"
			}
			list = append(list, map[string]any{"id": id, "generation": gen, "clientGeneration": hb.generation, "configStatus": cs, "delay": 0})
		}
		return list, rows.Err()
	})
	return out, err
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(map[string]any{"error": apiErr(ErrInternalError, "encode reply: %v", err)})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = apiErr(ErrInternalError, "%v", err)
	}
	if e.Name == ErrNoLeader || e.Name == ErrNotReady {
		e.Transient = true
	}
	writeJSON(w, e.Status(), map[string]any{"error": e})
}

// NewSecret returns a new random cluster secret, hex-encoded.
func NewSecret() string {
	b := make([]byte, 32)
	randRead(b)
	return hex.EncodeToString(b)
}
