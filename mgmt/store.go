package mgmt

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"keel/node"
)

//go:embed migrations/*.sql
var storeMigrations embed.FS

// Command is one entry of the replicated log: a write call with its
// arguments, stamped by the leader with everything the applier must not
// compute on its own (time, randomness, node-local settings), so that every
// member applies it to the same result.
type Command struct {
	Op   string          `json:"op"`
	Arg  string          `json:"arg,omitempty"`
	Body json.RawMessage `json:"body,omitempty"`
	// Time is the leader's clock at proposal, unix seconds.
	Time int64 `json:"time"`
	// Seed drives the allocator's tie-breaks.
	Seed int64 `json:"seed"`
	// ReuseImplicit is the leader's mgmt.reuse_server_implicit.
	ReuseImplicit bool `json:"reuseImplicit,omitempty"`
}

// Result is what applying a command produced.
type Result struct {
	Index      uint64
	Generation int64
	Info       any
	Err        *Error
}

// Store is the cluster state in SQLite and the stateless command applier
// over it. Reads may run concurrently with Apply (WAL); Restore replaces
// the database under the write lock.
type Store struct {
	mu   sync.RWMutex
	db   *sql.DB
	path string
}

// OpenStore opens (creating) the store database at path.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	db, err := openStoreDB(ctx, path)
	if err != nil {
		return nil, err
	}
	return &Store{db: db, path: path}, nil
}

// openStoreDB opens the store with synchronous=NORMAL: the Raft log is the
// durable record; after a power loss the store restarts from the last
// snapshot and the log is applied again (Raft restores the snapshot on
// every start).
func openStoreDB(ctx context.Context, path string) (*sql.DB, error) {
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=mmap_size(1073741824)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	sub, err := fs.Sub(storeMigrations, "migrations")
	if err != nil {
		return nil, err
	}
	if err := node.Migrate(ctx, db, sub); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// AppliedIndex is the Raft index of the last command applied.
func (s *Store) AppliedIndex() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, _ := metaInt(s.db, "applied_index")
	return uint64(v)
}

// Generation is the cluster generation.
func (s *Store) Generation() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, _ := metaInt(s.db, "generation")
	return v
}

// Meta returns a value of the meta table ("" when unset): name,
// location, location_id, sub_cluster_id, ...
func (s *Store) Meta(k string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return metaString(s.db, k)
}

type queryer interface {
	QueryRow(query string, args ...any) *sql.Row
}

func metaInt(q queryer, k string) (int64, error) {
	var v string
	if err := q.QueryRow(`SELECT v FROM meta WHERE k = ?`, k).Scan(&v); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return 0, nil
		}
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

func metaString(q queryer, k string) string {
	var v string
	q.QueryRow(`SELECT v FROM meta WHERE k = ?`, k).Scan(&v)
	return v
}

// queryDB is the database handle reads get.
type queryDB = *sql.DB

// txn is one command being applied.
type txn struct {
	tx  *sql.Tx
	cmd *Command
	gen int64 // the generation this command will commit, if it succeeds
}

func (t *txn) setMeta(k string, v any) error {
	_, err := t.tx.Exec(`INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)`, k, fmt.Sprint(v))
	return err
}

// Apply applies one command at Raft index index. A command at or below the
// applied index was applied before (log replay after restart) and is
// skipped. A command that fails leaves nothing but the applied index
// behind. It never returns a Go error: failures of the database itself are
// reported as internalError results, and the applied index is not moved so
// that the entry is applied again after a restart.
func (s *Store) Apply(index uint64, cmd *Command) Result {
	s.mu.RLock()
	defer s.mu.RUnlock()
	applied, err := metaInt(s.db, "applied_index")
	if err != nil {
		return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
	}
	if index != 0 && index <= uint64(applied) {
		gen, _ := metaInt(s.db, "generation")
		return Result{Index: index, Generation: gen, Err: apiErr(ErrNotAllowed, "raft index %d already applied", index)}
	}
	h, ok := commands[cmd.Op]
	if !ok {
		return s.fail(index, apiErr(ErrInvalidCall, "unknown command %q", cmd.Op))
	}
	tx, err := s.db.Begin()
	if err != nil {
		return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
	}
	defer tx.Rollback()
	gen, err := metaInt(tx, "generation")
	if err != nil {
		return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
	}
	t := &txn{tx: tx, cmd: cmd, gen: gen + 1}
	info, herr := h(t)
	if herr != nil {
		tx.Rollback()
		var ae *Error
		if !errors.As(herr, &ae) {
			ae = apiErr(ErrInternalError, "%s: %v", cmd.Op, herr)
		}
		return s.fail(index, ae)
	}
	if err := t.setMeta("generation", t.gen); err != nil {
		return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
	}
	if index != 0 {
		if err := t.setMeta("applied_index", index); err != nil {
			return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
		}
	}
	if err := tx.Commit(); err != nil {
		return Result{Index: index, Err: apiErr(ErrInternalError, "store: commit: %v", err)}
	}
	return Result{Index: index, Generation: t.gen, Info: info}
}

// fail records the applied index of a command that was refused.
func (s *Store) fail(index uint64, e *Error) Result {
	gen, _ := metaInt(s.db, "generation")
	if index != 0 {
		if _, err := s.db.Exec(`UPDATE meta SET v = ? WHERE k = 'applied_index'`, strconv.FormatUint(index, 10)); err != nil {
			return Result{Index: index, Err: apiErr(ErrInternalError, "store: %v", err)}
		}
	}
	return Result{Index: index, Generation: gen, Err: e}
}

// SnapshotTo writes a consistent copy of the store to path (VACUUM INTO).
func (s *Store) SnapshotTo(path string) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	os.Remove(path)
	if _, err := s.db.Exec(`VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("store snapshot: %w", err)
	}
	return nil
}

// ReplaceWith replaces the store by the database file at path (a
// snapshot being restored) and reopens it.
func (s *Store) ReplaceWith(ctx context.Context, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store restore: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		os.Remove(s.path + suffix)
	}
	if err := os.Rename(path, s.path); err != nil {
		return fmt.Errorf("store restore: %w", err)
	}
	db, err := openStoreDB(ctx, s.path)
	if err != nil {
		return err
	}
	s.db = db
	return nil
}

// read runs f with the current database under the read lock.
func (s *Store) read(f func(db queryDB) (any, error)) (any, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return f(s.db)
}
