package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"keel/mgmt/apiclient"
	"keel/node"
)

// InitFile is written by `keel cluster init` into the mgmt directory; a
// node that finds it and has no Raft state bootstraps a one-voter cluster
// and commits the identity in it.
const InitFile = "init.json"

// ServiceConfig is what a keel_mgmt process needs.
type ServiceConfig struct {
	NodeID            int
	Dir               string // <state-dir>/mgmt
	RaftAddr          string
	Listen            string
	APIAdvertise      string
	Secret            []byte
	Token             string
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration
	ServiceTimeout    time.Duration
	// ClientWriteGrace: how long after its last heartbeat a client may
	// still be writing (its mgmt lease plus its I/O timeout, and margin).
	ClientWriteGrace time.Duration
	ReuseImplicit    bool
	Log              *slog.Logger
}

// Service is one mgmt member: Raft, the store and the API.
type Service struct {
	cfg   ServiceConfig
	log   *slog.Logger
	store *Store
	rlog  *RaftLog
	raft  *raft.Raft
	trans *raft.NetworkTransport
	ln    net.Listener
	http  *http.Server
	fwd   *http.Client

	lists listCache // encoded big listings by applied index

	started time.Time

	mu          sync.Mutex
	seen        map[string]heartbeat // services' last heartbeats (leader only)
	spaceAt     map[int]time.Time    // when this node last committed a disk's space figures
	leaderSince time.Time
}

type heartbeat struct {
	at         time.Time
	generation int64
	version    string
	startTime  int64
	open       []string // clients: volumes with open exports
}

// clientMayWrite reports whether client c may still have writes in flight
// under the disk sets and layers it last knew, and its last heartbeat. A
// client that stopped heartbeating may be cut off from mgmt and still
// reach the servers; it stops writing once its mgmt lease runs out
// (client.mgmt_lease) and its last requests end within its I/O timeout, so
// it is taken as stopped only ClientWriteGrace after its last heartbeat.
// A new leader has not heard every client yet: one it has not heard of
// counts as writing until it has led for ClientWriteGrace. s.mu is held.
func (s *Service) clientMayWrite(c int) (heartbeat, bool) {
	hb, ok := s.seen[fmt.Sprintf("client/%d", c)]
	if !ok {
		return hb, time.Since(s.leaderSince) < s.cfg.ClientWriteGrace
	}
	return hb, time.Since(hb.at) <= s.cfg.ClientWriteGrace
}

// ReadSecret reads a hex cluster secret file.
func ReadSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read cluster secret: %w", err)
	}
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == ' ') {
		s = s[:len(s)-1]
	}
	if len(s) < 32 {
		return nil, fmt.Errorf("read cluster secret: %s holds no secret (too short)", path)
	}
	return []byte(s), nil
}

// StartService opens the store and Raft and starts serving the API.
func StartService(ctx context.Context, cfg ServiceConfig) (*Service, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("mgmt: %w", err)
	}
	cleanTemp(cfg.Dir)
	if cfg.ClientWriteGrace <= 0 {
		cfg.ClientWriteGrace = 3 * cfg.ServiceTimeout // the defaults' ratio
	}
	s := &Service{cfg: cfg, log: cfg.Log, seen: map[string]heartbeat{}, spaceAt: map[int]time.Time{}, fwd: &http.Client{Timeout: 30 * time.Second}, started: time.Now()}
	var err error
	if s.store, err = OpenStore(ctx, filepath.Join(cfg.Dir, "store.db")); err != nil {
		return nil, err
	}
	if s.rlog, err = OpenRaftLog(ctx, filepath.Join(cfg.Dir, "raft.db")); err != nil {
		s.store.Close()
		return nil, err
	}
	if err := s.startRaft(); err != nil {
		s.rlog.Close()
		s.store.Close()
		return nil, err
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		s.Close()
		return nil, fmt.Errorf("mgmt: listen %s: %w", cfg.Listen, err)
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(s.ln)
	go s.leaderLoop(ctx)
	return s, nil
}

func (s *Service) apiAddr() string {
	if s.cfg.APIAdvertise != "" {
		return s.cfg.APIAdvertise
	}
	return "http://" + s.ln.Addr().String()
}

func (s *Service) startRaft() error {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(strconv.Itoa(s.cfg.NodeID))
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.TrailingLogs = s.cfg.TrailingLogs
	if s.cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = s.cfg.SnapshotInterval
	}
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: os.Stderr})
	stream, err := newAuthStream(s.cfg.RaftAddr, s.cfg.Secret, s.log)
	if err != nil {
		return err
	}
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3, Timeout: 10 * time.Second, Logger: rc.Logger})
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.Dir, 2, rc.Logger)
	if err != nil {
		return fmt.Errorf("mgmt: snapshots: %w", err)
	}
	has, err := raft.HasExistingState(s.rlog, s.rlog, snaps)
	if err != nil {
		return fmt.Errorf("mgmt: %w", err)
	}
	if !has {
		if _, err := os.Stat(filepath.Join(s.cfg.Dir, InitFile)); err == nil {
			s.log.Info("bootstrapping a new cluster", "node", s.cfg.NodeID, "raft", s.trans.LocalAddr())
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: s.trans.LocalAddr()}}}
			if err := raft.BootstrapCluster(rc, s.rlog, s.rlog, snaps, s.trans, conf); err != nil {
				return fmt.Errorf("mgmt: bootstrap: %w", err)
			}
		} else {
			s.log.Info("no cluster state: waiting to be added by a leader (keel cluster join)", "raft", s.trans.LocalAddr())
		}
	}
	r, err := raft.NewRaft(rc, &fsm{store: s.store, dir: s.cfg.Dir, log: s.log}, s.rlog, s.rlog, snaps, s.trans)
	if err != nil {
		return fmt.Errorf("mgmt: raft: %w", err)
	}
	s.raft = r
	return nil
}

// Close stops serving and closes Raft and the databases.
func (s *Service) Close() error {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	if s.raft != nil {
		s.raft.Shutdown().Error()
	}
	if s.trans != nil {
		s.trans.Close()
	}
	s.rlog.Close()
	return s.store.Close()
}

// Store gives tools and tests read access to the store.
func (s *Service) Store() *Store { return s.store }

// IsLeader reports whether this member leads.
func (s *Service) IsLeader() bool { return s.raft.State() == raft.Leader }

// leaderLoop runs the leader's duties: record itself as a member, commit
// the cluster identity after a bootstrap, and watch services' heartbeats.
func (s *Service) leaderLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	wasLeader := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !s.IsLeader() {
			wasLeader = false
			s.heartbeatLeader(ctx)
			continue
		}
		if !wasLeader {
			wasLeader = true
			s.mu.Lock()
			s.leaderSince = time.Now()
			s.seen = map[string]heartbeat{}
			s.mu.Unlock()
			if err := s.raft.Barrier(10 * time.Second).Error(); err != nil {
				wasLeader = false
				continue
			}
		}
		s.leaderDuties(ctx)
	}
}

// heartbeatLeader tells the leader this member is alive (ServicesList
// shows mgmt members that stop doing so as down).
func (s *Service) heartbeatLeader(ctx context.Context) {
	leader, err := s.leaderAPI()
	if err != nil {
		return
	}
	c := apiclient.New(leader, s.cfg.Token)
	c.HTTP.Timeout = 2 * time.Second
	hb := HeartbeatDesc{Type: "mgmt", ID: s.cfg.NodeID, NodeID: s.cfg.NodeID, Version: node.Version, StartTime: s.started.Unix()}
	if _, err := c.Post(ctx, "ServiceHeartbeat", hb, nil); err != nil {
		s.log.Debug("mgmt heartbeat to the leader failed", "leader", leader, "err", err)
	}
}

func (s *Service) leaderDuties(ctx context.Context) {
	if s.store.Meta("location_id") == "" {
		if b, err := os.ReadFile(filepath.Join(s.cfg.Dir, InitFile)); err == nil {
			if _, err := s.propose(ctx, Command{Op: "ClusterInit", Body: b}); err != nil {
				s.log.Error("commit cluster identity", "err", err)
			}
		}
	}
	var api string
	s.store.mu.RLock()
	s.store.db.QueryRow(`SELECT api_addr FROM members WHERE id = ?`, s.cfg.NodeID).Scan(&api)
	s.store.mu.RUnlock()
	if api != s.apiAddr() {
		b, _ := json.Marshal(MgmtJoinDesc{ID: s.cfg.NodeID, RaftAddr: string(s.trans.LocalAddr()), APIAddr: s.apiAddr()})
		if _, err := s.propose(ctx, Command{Op: "MgmtJoin", Body: b}); err != nil {
			s.log.Error("record mgmt member", "err", err)
		}
	}
	s.checkServices(ctx)
}

// checkServices commits "down" for running services whose heartbeats
// stopped. A new leader first waits one full timeout.
func (s *Service) checkServices(ctx context.Context) {
	s.mu.Lock()
	since := s.leaderSince
	seen := make(map[string]heartbeat, len(s.seen))
	for k, v := range s.seen {
		seen[k] = v
	}
	s.mu.Unlock()
	if time.Since(since) < s.cfg.ServiceTimeout {
		return
	}
	type svc struct {
		typ string
		id  int
	}
	var down []svc
	s.store.mu.RLock()
	rows, err := s.store.db.Query(`SELECT type, id FROM services WHERE status = 'running'`)
	if err == nil {
		for rows.Next() {
			var v svc
			rows.Scan(&v.typ, &v.id)
			hb, ok := seen[fmt.Sprintf("%s/%d", v.typ, v.id)]
			if !ok || time.Since(hb.at) > s.cfg.ServiceTimeout {
				down = append(down, v)
			}
		}
		rows.Close()
	}
	s.store.mu.RUnlock()
	for _, v := range down {
		b, _ := json.Marshal(ServiceDownDesc{Type: v.typ, ID: v.id})
		s.log.Warn("service stopped sending heartbeats; marking it down", "type", v.typ, "id", v.id)
		if _, err := s.propose(ctx, Command{Op: "ServiceDown", Body: b}); err != nil {
			s.log.Error("mark service down", "type", v.typ, "id", v.id, "err", err)
		}
	}
}

// propose commits a command through Raft on the leader and returns the
// applier's result.
func (s *Service) propose(ctx context.Context, c Command) (Result, error) {
	if s.raft.State() != raft.Leader {
		return Result{}, &Error{Name: ErrNoLeader, Descr: "this node is not the leader", Transient: true}
	}
	c.Time = time.Now().Unix()
	c.Seed = rand.Int64()
	c.ReuseImplicit = s.cfg.ReuseImplicit
	b, err := json.Marshal(c)
	if err != nil {
		return Result{}, err
	}
	f := s.raft.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrEnqueueTimeout) ||
			errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return Result{}, &Error{Name: ErrNoLeader, Descr: fmt.Sprintf("%s: %v; retry", c.Op, err), Transient: true}
		}
		return Result{}, apiErr(ErrInternalError, "%s: %v", c.Op, err)
	}
	res, ok := f.Response().(Result)
	if !ok {
		return Result{}, apiErr(ErrInternalError, "%s: unexpected apply result %T", c.Op, f.Response())
	}
	if res.Err != nil {
		return res, res.Err
	}
	return res, nil
}

// waitApplied waits until the local store applied index idx.
func (s *Service) waitApplied(ctx context.Context, idx uint64) error {
	deadline := time.Now().Add(10 * time.Second)
	for s.store.AppliedIndex() < idx {
		if time.Now().After(deadline) {
			return &Error{Name: ErrNotReady, Descr: fmt.Sprintf("this node has not applied index %d yet", idx), Transient: true}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// leaderAPI returns the API address of the current leader.
func (s *Service) leaderAPI() (string, error) {
	addr, id := s.raft.LeaderWithID()
	if addr == "" {
		return "", &Error{Name: ErrNoLeader, Descr: "no mgmt leader elected right now; retry", Transient: true}
	}
	var api string
	s.store.mu.RLock()
	err := s.store.db.QueryRow(`SELECT api_addr FROM members WHERE id = ?`, string(id)).Scan(&api)
	s.store.mu.RUnlock()
	if err != nil {
		return "", &Error{Name: ErrNoLeader, Descr: fmt.Sprintf("leader %s has not published its API address yet; retry", id), Transient: true}
	}
	return api, nil
}

// NotifyReady tells systemd the service is up.
func (s *Service) NotifyReady() { node.NotifyReady(s.log) }
