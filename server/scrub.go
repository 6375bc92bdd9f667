package server

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"slices"
	"sync"
	"time"

	"keel/mgmt/apiclient"
	"keel/wire"
)

// Scrubbing: a job per disk reads every data block of every object AU by
// AU, verifies its CRC32C, and rewrites a bad block from a good replica of
// its object. It is rate-limited, can be paused, and continues from its
// position (after a pause, or after a restart from the position it last
// reported to mgmt).

// ErrStaleCopy means a replica's copy of a block is older than the
// block it should repair: it cannot be used.
var ErrStaleCopy = errors.New("replica's copy is older than the local block")

// DefaultScrubRate is a scrub's read rate when none is configured: low
// enough that client I/O keeps the disk.
const DefaultScrubRate = 64 << 20

// ScrubPosition is where a scrub continues: an object-table slot and an
// AU index of that slot's object. Slots are walked in order, so a resumed
// job does not read again what it verified; an object created meanwhile
// in a slot behind the position holds new data, checked by the next job.
type ScrubPosition struct {
	Slot int `json:"slot"`
	AU   int `json:"au"`
}

func (p ScrubPosition) String() string { return fmt.Sprintf("%d/%d", p.Slot, p.AU) }

// ScrubStep is what one step of a scrub read.
type ScrubStep struct {
	Next   ScrubPosition // where the next step starts
	Done   bool          // no allocated AU was left at or after the position
	Bytes  uint64        // bytes read
	Blocks uint64        // data blocks verified
	Bad    []BadBlock
}

// ScrubNext verifies the next allocated AU at or after pos: it reads the
// AU (holding only that AU's stripe, so client I/O elsewhere goes on) and
// checks the CRC of each data block. buf must hold AUSize bytes.
func (s *Store) ScrubNext(pos ScrubPosition, buf []byte) (ScrubStep, error) {
	s.mu.Lock()
	var o *object
	idx := -1
	for slot := max(pos.Slot, 0); slot < len(s.slots) && idx < 0; slot++ {
		first := 0
		if slot == pos.Slot {
			first = max(pos.AU, 0)
		}
		if o = s.slots[slot]; o == nil {
			continue
		}
		for i := first; i < len(o.aus); i++ {
			if o.aus[i] >= 0 {
				idx, pos = i, ScrubPosition{Slot: slot, AU: i}
				break
			}
		}
	}
	end := len(s.slots)
	s.mu.Unlock()
	if idx < 0 {
		return ScrubStep{Next: ScrubPosition{Slot: end}, Done: true}, nil
	}
	bad, n, err := s.scrubAU(o, idx, buf)
	if err != nil {
		return ScrubStep{Next: pos}, err
	}
	return ScrubStep{Next: ScrubPosition{Slot: pos.Slot, AU: pos.AU + 1}, Bytes: AUSize, Blocks: n, Bad: bad}, nil
}

// BlockCopy is one block as a replica holds it: its state, the version of
// its last change, and its data when the state is BlockData.
type BlockCopy struct {
	State   uint8
	Version uint64
	Data    []byte
}

// repairOutcome says what repairBlock did.
type repairOutcome int

const (
	repaired   repairOutcome = iota
	superseded               // the block changed since it was found bad: a newer write or TRIM, or the object is gone
)

// repairBlock rewrites block blk of object id with a replica's copy,
// unless the block changed since the scrub found it bad. The store's
// version rule decides: a local block newer than the copy keeps its
// version (the copy cannot repair it: ErrStaleCopy); a copy at least as
// new replaces it with the copy's version, so a write newer than the copy
// that arrives later still wins.
// With hidden it repairs the hidden object of the id.
func (s *Store) repairBlock(id ObjectID, hidden bool, blk int, c BlockCopy) (repairOutcome, error) {
	if blk < 0 || blk >= int(s.sb.ObjectSize/BlockSize) || (c.State == BlockData && len(c.Data) != BlockSize) {
		return 0, fmt.Errorf("disk %d: repair object %s block %d: %w", s.sb.DiskID, id, blk, ErrRange)
	}
	s.gate.RLock()
	defer s.gate.RUnlock()
	s.mu.Lock()
	o, err := s.find(id, hidden)
	s.mu.Unlock()
	if errors.Is(err, ErrNotFound) {
		return superseded, nil
	}
	if err != nil {
		return 0, err
	}
	idx, b := blk/BlocksPerAU, blk%BlocksPerAU
	st := s.stripeOf(o.inc, idx)
	st.Lock() // no write, TRIM or read of this AU meanwhile
	defer st.Unlock()
	s.mu.Lock()
	au := o.aus[idx]
	var state uint8
	var ver uint64
	var crc uint32
	if au >= 0 {
		m := &s.aus[au]
		state, ver, crc = m.states[b], m.vers[b], m.crcs[b]
	}
	s.mu.Unlock()
	if state != BlockData {
		return superseded, nil
	}
	cur := make([]byte, BlockSize)
	if _, err := s.dev.ReadAt(cur, s.dataOff(au, b)); err != nil {
		return 0, s.fail(err)
	}
	if crc32.Checksum(cur, castagnoli) == crc {
		return superseded, nil
	}
	if c.Version < ver {
		return 0, fmt.Errorf("disk %d: repair object %s block %d: %w (copy version %d, local %d)", s.sb.DiskID, id, blk, ErrStaleCopy, c.Version, ver)
	}
	if c.State != BlockData {
		s.mu.Lock()
		err := s.zeroChunk(o, idx, b, 1, c.State, c.Version, true)
		s.raiseVersion(o, c.Version)
		s.mu.Unlock()
		return repaired, err
	}
	if _, err := s.dev.WriteAt(c.Data, s.dataOff(au, b)); err != nil {
		return 0, s.fail(err)
	}
	s.mu.Lock()
	m := &s.aus[au]
	m.states[b], m.crcs[b], m.vers[b] = BlockData, crc32.Checksum(c.Data, castagnoli), c.Version
	s.markAU(au)
	s.raiseVersion(o, c.Version)
	s.mu.Unlock()
	return repaired, nil
}

// Replica is another disk holding a copy of an object, and a connection
// to the server of that disk.
type Replica struct {
	Disk uint32
	Conn *wire.Client
}

// ReplicaFinder names the other replicas of an object of a disk.
type ReplicaFinder interface {
	Replicas(ctx context.Context, disk uint32, id ObjectID) ([]Replica, error)
}

// FetchBlock reads one block of an object's own data from a replica:
// READ_META for its state and version, READ_OWN for its data, and
// READ_META again; if the block changed in between it tries again. A
// hidden object is asked for as hidden, and as visible where the replica
// has not reclaimed its layer yet.
func FetchBlock(ctx context.Context, r Replica, id ObjectID, hidden bool, blk int) (BlockCopy, error) {
	if hidden {
		c, err := fetchBlock(ctx, r, id, wire.FlagHidden, blk)
		var se *wire.StatusError
		if !errors.As(err, &se) || se.Status != wire.StatusNotFound {
			return c, err
		}
	}
	return fetchBlock(ctx, r, id, 0, blk)
}

func fetchBlock(ctx context.Context, r Replica, id ObjectID, flags uint8, blk int) (BlockCopy, error) {
	meta := func() (uint8, uint64, error) {
		var resp wire.Response
		req := wire.Request{Op: wire.OpReadMeta, Flags: flags, Disk: r.Disk, Volume: id.Volume, Index: id.Index, Offset: uint64(blk) * BlockSize, Length: BlockSize}
		if err := r.Conn.Do(ctx, &req, &resp); err != nil {
			return 0, 0, err
		}
		states, vers, err := wire.DecodeBlockMeta(resp.Data, 1)
		if err != nil {
			return 0, 0, err
		}
		return states[0], vers[0], nil
	}
	for try := 0; try < 3; try++ {
		state, ver, err := meta()
		if err != nil {
			return BlockCopy{}, fmt.Errorf("fetch object %s block %d from disk %d: %w", id, blk, r.Disk, err)
		}
		c := BlockCopy{State: state, Version: ver}
		if state != BlockData {
			return c, nil
		}
		var resp wire.Response
		req := wire.Request{Op: wire.OpReadOwn, Flags: flags, Disk: r.Disk, Volume: id.Volume, Index: id.Index, Offset: uint64(blk) * BlockSize, Length: BlockSize}
		if err := r.Conn.Do(ctx, &req, &resp); err != nil {
			return BlockCopy{}, fmt.Errorf("fetch object %s block %d from disk %d: %w", id, blk, r.Disk, err)
		}
		if len(resp.Data) != 1+BlockSize || resp.Data[0] != BlockData {
			continue // changed under us
		}
		c.Data = append([]byte(nil), resp.Data[1:]...)
		if state2, ver2, err := meta(); err == nil && state2 == state && ver2 == ver {
			return c, nil
		}
	}
	return BlockCopy{}, fmt.Errorf("fetch object %s block %d from disk %d: the block kept changing; the next scrub retries it", id, blk, r.Disk)
}

// ScrubStatus is a scrub job's progress, as the server reports it to mgmt.
type ScrubStatus struct {
	Job   int64  `json:"job"`
	State string `json:"state"` // running, paused, done, failed
	// Position is where the job continues.
	Position      ScrubPosition `json:"position"`
	ScrubbedBytes uint64        `json:"scrubbedBytes"`
	// TotalBytes is the disk's allocated space when the job started, for
	// an estimate of the time left.
	TotalBytes   uint64 `json:"totalBytes"`
	Blocks       uint64 `json:"blocks"`       // data blocks verified
	Errors       uint64 `json:"errors"`       // blocks failing their checksum
	Repaired     uint64 `json:"repaired"`     // rewritten from a good replica (or overwritten meanwhile)
	Unrepairable uint64 `json:"unrepairable"` // without a good replica
	BW           uint64 `json:"bw"`           // bytes per second while running
	Error        string `json:"error,omitempty"`
}

// Scrub job states.
const (
	ScrubRunning = "running"
	ScrubPaused  = "paused"
	ScrubDone    = "done"
	ScrubFailed  = "failed"
)

// Scrubber runs the scrub jobs of one disk, one at a time.
type Scrubber struct {
	store *Store
	find  ReplicaFinder // nil: nothing can be repaired
	rate  uint64        // bytes per second, 0: unlimited
	log   *slog.Logger

	mu      sync.Mutex
	status  ScrubStatus
	paused  bool
	ran     time.Duration // running time of the job, pauses excluded
	wake    chan struct{}
	cancel  context.CancelFunc
	stopped chan struct{}
}

// NewScrubber makes the scrubber of a disk. rate limits its reads in bytes
// per second (0: unlimited); find, if not nil, locates the replicas bad
// blocks are repaired from.
func NewScrubber(st *Store, find ReplicaFinder, rate uint64, log *slog.Logger) *Scrubber {
	return &Scrubber{store: st, find: find, rate: rate, log: log.With("disk", st.sb.DiskID), wake: make(chan struct{}, 1)}
}

// Start begins a job as from describes it (its number, and for a job
// resumed after a restart its position and counts so far), paused or
// not. A job still running is stopped first.
func (sc *Scrubber) Start(ctx context.Context, from ScrubStatus, paused bool) {
	sc.Stop()
	ctx, cancel := context.WithCancel(ctx)
	sc.mu.Lock()
	from.State, from.Error, from.BW = ScrubRunning, "", 0
	if from.ScrubbedBytes == 0 || from.TotalBytes == 0 {
		st := sc.store.Stats()
		from.TotalBytes = st.AUsUsed * AUSize
	}
	sc.status, sc.paused, sc.ran = from, paused, 0
	sc.cancel, sc.stopped = cancel, make(chan struct{})
	stopped := sc.stopped
	sc.mu.Unlock()
	sc.log.Info("scrub started", "job", from.Job, "from", from.Position.String(), "paused", paused, "rate", sc.rate)
	go func() {
		defer close(stopped)
		sc.run(ctx)
	}()
}

// Stop ends the running job, if any, and waits for it.
func (sc *Scrubber) Stop() {
	sc.mu.Lock()
	cancel, stopped := sc.cancel, sc.stopped
	sc.cancel = nil
	sc.mu.Unlock()
	if cancel != nil {
		cancel()
		<-stopped
	}
}

// SetPaused pauses or continues the job (and one started later).
func (sc *Scrubber) SetPaused(paused bool) {
	sc.mu.Lock()
	changed := sc.paused != paused
	sc.paused = paused
	sc.mu.Unlock()
	if changed {
		sc.log.Info("scrub paused", "paused", paused)
		select {
		case sc.wake <- struct{}{}:
		default:
		}
	}
}

// Status returns the job's progress.
func (sc *Scrubber) Status() ScrubStatus {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st := sc.status
	if st.State == ScrubRunning && sc.paused {
		st.State = ScrubPaused
	}
	if secs := sc.ran.Seconds(); secs > 0 {
		st.BW = uint64(float64(st.ScrubbedBytes) / secs)
	}
	return st
}

func (sc *Scrubber) finish(state string, err error) {
	sc.mu.Lock()
	sc.status.State = state
	if err != nil {
		sc.status.Error = err.Error()
	}
	st := sc.status
	sc.mu.Unlock()
	if err != nil {
		sc.log.Error("scrub failed; start it again when the disk is healthy", "job", st.Job, "at", st.Position.String(), "err", err)
		return
	}
	sc.log.Info("scrub done", "job", st.Job, "bytes", st.ScrubbedBytes, "blocks", st.Blocks, "errors", st.Errors,
		"repaired", st.Repaired, "unrepairable", st.Unrepairable)
}

// waitRunning blocks while the job is paused; false when ctx ended.
func (sc *Scrubber) waitRunning(ctx context.Context) bool {
	for {
		sc.mu.Lock()
		paused := sc.paused
		sc.mu.Unlock()
		if !paused {
			return ctx.Err() == nil
		}
		select {
		case <-ctx.Done():
			return false
		case <-sc.wake:
		}
	}
}

func (sc *Scrubber) run(ctx context.Context) {
	buf := make([]byte, AUSize)
	for sc.waitRunning(ctx) {
		t0 := time.Now()
		sc.mu.Lock()
		pos := sc.status.Position
		sc.mu.Unlock()
		step, err := sc.store.ScrubNext(pos, buf)
		if err != nil {
			sc.finish(ScrubFailed, err)
			return
		}
		var fixed, lost uint64
		for _, b := range step.Bad {
			if sc.repair(ctx, b) {
				fixed++
			} else {
				lost++
			}
		}
		if fixed > 0 {
			// Make the repairs durable now rather than at the next
			// periodic flush.
			if err := sc.store.Flush(); err != nil {
				sc.finish(ScrubFailed, err)
				return
			}
		}
		sc.mu.Lock()
		s := &sc.status
		s.Position = step.Next
		s.ScrubbedBytes += step.Bytes
		s.Blocks += step.Blocks
		s.Errors += uint64(len(step.Bad))
		s.Repaired += fixed
		s.Unrepairable += lost
		sc.mu.Unlock()
		if step.Done {
			sc.finish(ScrubDone, nil)
			return
		}
		if sc.rate > 0 {
			want := time.Duration(float64(step.Bytes) / float64(sc.rate) * float64(time.Second))
			if wait := want - time.Since(t0); wait > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(wait):
				}
			}
		}
		sc.mu.Lock()
		sc.ran += time.Since(t0)
		sc.mu.Unlock()
	}
}

// placement is the object whose disk set holds the bad block's object:
// itself, or for a hidden object (whose deleted layer mgmt no longer
// places) a visible object that reads through it.
func (sc *Scrubber) placement(b BadBlock) (ObjectID, bool) {
	if !b.Hidden {
		return b.Object, true
	}
	return sc.store.visibleDescendant(b.Object)
}

// repair rewrites a bad block from the first replica that has a good copy
// at least as new; false (logged as an error) when none has.
func (sc *Scrubber) repair(ctx context.Context, b BadBlock) bool {
	log := sc.log.With("object", b.Object.String(), "block", b.Block)
	log.Warn("scrub: block fails its checksum; repairing it from a replica")
	var reps []Replica
	var errs []error
	if sc.find == nil {
		errs = append(errs, errors.New("no replica finder (the server has no mgmt connection)"))
	} else if where, ok := sc.placement(b); !ok {
		errs = append(errs, errors.New("the hidden object has no visible descendant left (freed meanwhile)"))
	} else if r, err := sc.find.Replicas(ctx, sc.store.sb.DiskID, where); err != nil {
		errs = append(errs, err)
	} else {
		reps = r
	}
	for _, r := range reps {
		c, err := FetchBlock(ctx, r, b.Object, b.Hidden, b.Block)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := sc.store.repairBlock(b.Object, b.Hidden, b.Block, c)
		if err != nil {
			errs = append(errs, fmt.Errorf("disk %d: %w", r.Disk, err))
			continue
		}
		if out == superseded {
			log.Info("scrub: bad block was overwritten meanwhile; nothing to repair")
		} else {
			log.Info("scrub: block repaired", "from_disk", r.Disk, "version", c.Version)
		}
		return true
	}
	if len(reps) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no other replica holds the object"))
	}
	log.Error("SCRUB: BLOCK UNREPAIRABLE: no good replica; its data is lost on this disk and reads of it fail until it is rewritten",
		"replicas", len(reps), "err", errors.Join(errs...))
	return false
}

// mgmtReplicas finds an object's other replicas from mgmt's DiskReplicas
// (refreshed when older than a few seconds) and keeps one connection per
// peer server.
type mgmtReplicas struct {
	api  *apiclient.Client
	dial func(ctx context.Context, addr string) (*wire.Client, error)

	mu    sync.Mutex
	m     *ReplicaMap
	at    time.Time
	conns map[string]*wire.Client
}

const replicaMapMaxAge = 5 * time.Second

func (f *mgmtReplicas) Replicas(ctx context.Context, disk uint32, id ObjectID) ([]Replica, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || time.Since(f.at) > replicaMapMaxAge {
		var r apiclient.DiskReplicas
		if _, err := f.api.Get(ctx, fmt.Sprintf("DiskReplicas/%d", disk), nil, &r); err != nil {
			return nil, fmt.Errorf("disk %d: where are the replicas (DiskReplicas): %w", disk, err)
		}
		f.m, f.at = NewReplicaMap(&r), time.Now()
	}
	peers, ok := f.m.Peers(id)
	if !ok {
		return nil, fmt.Errorf("disk %d: mgmt places object %s on no disk set of this disk (deleted volume?)", disk, id)
	}
	var out []Replica
	var errs []error
	// placeTail (last) first: the replica clients read from.
	for _, p := range slices.Backward(peers) {
		loc := f.m.Location(p)
		if !loc.Up {
			errs = append(errs, fmt.Errorf("disk %d is %s", p, loc.State))
			continue
		}
		c := f.conns[loc.Addr]
		if c == nil || c.Closed() {
			var err error
			if c, err = f.dial(ctx, loc.Addr); err != nil {
				errs = append(errs, fmt.Errorf("disk %d: %w", p, err))
				continue
			}
			f.conns[loc.Addr] = c
		}
		out = append(out, Replica{Disk: p, Conn: c})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("object %s: no up replica besides disk %d: %w", id, disk, errors.Join(errs...))
	}
	return out, nil
}

func (f *mgmtReplicas) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// followScrub runs disk id's scrub jobs as mgmt wants them: every
// heartbeat interval it reads the desired state (DiskDescribe), starts,
// resumes (after a restart, from the position last reported), pauses or
// continues the job, and reports progress (DiskScrubReport): a change of
// state at once, counts at most every scrubReportEvery.
func (s *Server) followScrub(ctx context.Context, o Options, id uint32, st *Store) {
	self := wire.Peer{NodeID: o.NodeID, Role: "server", Name: o.Name}
	find := &mgmtReplicas{api: o.Mgmt, conns: map[string]*wire.Client{}, dial: func(ctx context.Context, addr string) (*wire.Client, error) {
		return wire.Dial(ctx, "tcp", addr, o.Secret, self)
	}}
	defer find.close()
	rate := o.ScrubRate
	if rate == 0 {
		rate = DefaultScrubRate
	}
	sc := NewScrubber(st, find, rate, s.log)
	defer sc.Stop()
	interval := o.HeartbeatInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var reported scrubReported
	var lastErr string
	for {
		err := s.followScrubOnce(ctx, o.Mgmt, id, sc, &reported)
		if msg := fmt.Sprint(err); msg != lastErr {
			if err != nil {
				s.log.Warn("following the disk's scrub state in mgmt failed; retrying", "disk", id, "err", err)
			}
			lastErr = msg
		}
		select {
		case <-ctx.Done():
			return
		case <-st.Failed():
			s.reportScrubFailed(ctx, o.Mgmt, id, sc, reported.last)
			return
		case <-t.C:
		}
	}
}

// reportScrubFailed ends the disk's unfinished job in mgmt when the store
// failed (the disk is being ejected), so it does not show as scrubbing.
func (s *Server) reportScrubFailed(ctx context.Context, api *apiclient.Client, id uint32, sc *Scrubber, last apiclient.DiskScrubReport) {
	sc.Stop()
	if last.Job == 0 || last.State == ScrubDone || last.State == ScrubFailed {
		return
	}
	last.State, last.Error = ScrubFailed, "the disk failed (I/O error or timeout) and is being ejected"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := api.Post(ctx, fmt.Sprintf("DiskScrubReport/%d", id), last, nil); err != nil {
		s.log.Warn("reporting the failed disk's scrub job to mgmt failed", "disk", id, "err", err)
	}
}

// scrubReportEvery spaces the progress reports of a running job (each is a
// Raft commit); a change of state is reported at once.
const scrubReportEvery = 5 * time.Second

// scrubReported is the last progress report mgmt acknowledged, and when.
type scrubReported struct {
	last apiclient.DiskScrubReport
	at   time.Time
}

func (s *Server) followScrubOnce(ctx context.Context, api *apiclient.Client, id uint32, sc *Scrubber, reported *scrubReported) error {
	var want apiclient.DiskScrub
	if _, err := api.Get(ctx, fmt.Sprintf("DiskDescribe/%d", id), nil, &want); err != nil {
		return err
	}
	cur := sc.Status()
	switch {
	case want.Scrubbing && cur.Job != want.ScrubJob:
		// A new job, or ours after a restart: from where it got to.
		sc.Start(ctx, ScrubStatus{Job: want.ScrubJob, Position: ScrubPosition{Slot: int(want.ScrubPosition.Slot), AU: int(want.ScrubPosition.AU)},
			ScrubbedBytes: uint64(want.ScrubbedBytes), TotalBytes: uint64(want.ScrubTotalBytes), Blocks: uint64(want.ScrubBlocks),
			Errors: uint64(want.ScrubErrors), Repaired: uint64(want.ScrubRepaired), Unrepairable: uint64(want.ScrubUnrepairable)}, want.ScrubbingPaused)
	case want.Scrubbing:
		sc.SetPaused(want.ScrubbingPaused)
	case cur.Job != 0 && (cur.State == ScrubRunning || cur.State == ScrubPaused):
		// mgmt no longer wants this job (the disk was forgotten and
		// registered anew, say).
		sc.Stop()
		return nil
	}
	cur = sc.Status()
	if !want.Scrubbing || cur.Job != want.ScrubJob {
		return nil
	}
	rep := apiclient.DiskScrubReport{Job: cur.Job, State: cur.State, Position: apiclient.ScrubPosition{Slot: int64(cur.Position.Slot), AU: int64(cur.Position.AU)},
		ScrubbedBytes: int64(cur.ScrubbedBytes), TotalBytes: int64(cur.TotalBytes), Blocks: int64(cur.Blocks), Errors: int64(cur.Errors),
		Repaired: int64(cur.Repaired), Unrepairable: int64(cur.Unrepairable), BW: int64(cur.BW), Error: cur.Error}
	last := reported.last
	if rep == last || (rep.Job == last.Job && rep.State == last.State && time.Since(reported.at) < scrubReportEvery) {
		return nil
	}
	if _, err := api.Post(ctx, fmt.Sprintf("DiskScrubReport/%d", id), rep, nil); err != nil {
		return fmt.Errorf("report scrub progress: %w", err)
	}
	*reported = scrubReported{last: rep, at: time.Now()}
	return nil
}
