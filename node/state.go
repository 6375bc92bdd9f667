package node

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"modernc.org/sqlite" // registers the "sqlite" driver; pure Go, no cgo
	sqlite3 "modernc.org/sqlite/lib"
)

// StateFile is the node's state database inside the state directory.
const StateFile = "node.db"

var (
	// ErrStateTooNew means the database was migrated by a newer keel.
	ErrStateTooNew = errors.New("state database is newer than this binary")
	// ErrNotState means the file is not an SQLite database at all.
	ErrNotState = errors.New("not a keel state database")
)

//go:embed migrations/*.sql
var nodeMigrations embed.FS

// State is the node's SQLite state: identity, known disks, test results,
// alert state, initiator cache, maintenance. Several applets of one node
// share it; WAL mode and a busy timeout make that safe.
type State struct {
	DB   *sql.DB
	Path string
}

// OpenState opens (creating if needed) the node state under dir and brings
// its schema up to date.
func OpenState(ctx context.Context, dir string) (*State, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	p := filepath.Join(dir, StateFile)
	db, err := OpenDB(ctx, p, nodeMigrations)
	if err != nil {
		return nil, err
	}
	return &State{DB: db, Path: p}, nil
}

// Close closes the database.
func (s *State) Close() error { return s.DB.Close() }

// busyWait is how long a statement waits for another process's lock
// before it fails with SQLITE_BUSY.
const busyWait = 10 * time.Second

// OpenDB opens an SQLite database with keel's settings (WAL, a busy timeout
// long enough for several processes, foreign keys, immediate write
// transactions) and applies the numbered migrations in migrations
// (files NNNN_name.sql in any directory of the FS). It is shared by the
// node state and mgmt's Raft log.
func OpenDB(ctx context.Context, file string, migrations fs.FS) (*sql.DB, error) {
	dsn := fmt.Sprintf("file:%s?_pragma=busy_timeout(%d)"+
		"&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)&_txlock=immediate",
		file, busyWait.Milliseconds())
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", file, err)
	}
	if err := setWAL(ctx, db); err != nil {
		db.Close()
		return nil, stateOpenError(file, err)
	}
	if err := Migrate(ctx, db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return db, nil
}

// setWAL switches the database to WAL mode (a lasting property of the
// file). The switch upgrades the pragma's own read lock to a write lock, and
// SQLite refuses such an upgrade at once with SQLITE_BUSY, without the busy
// timeout, while another connection holds a lock: two processes opening a
// fresh database together meet exactly that. So it is retried here, for as
// long as the busy timeout would have waited.
func setWAL(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyWait)
	delay := time.Millisecond
	for {
		var mode string
		err := db.QueryRowContext(ctx, "PRAGMA journal_mode=WAL").Scan(&mode)
		switch {
		case err == nil && mode == "wal":
			return nil
		case err == nil:
			return fmt.Errorf("journal mode stays %q, want wal", mode)
		case !isBusy(err) || time.Now().After(deadline):
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 50*time.Millisecond)
	}
}

func isBusy(err error) bool {
	var e *sqlite.Error
	return errors.As(err, &e) && e.Code()&0xff == sqlite3.SQLITE_BUSY
}

func stateOpenError(file string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "not a database") || strings.Contains(msg, "file is encrypted") {
		return fmt.Errorf("%s: %w (%s); move it away to start afresh", file, ErrNotState, msg)
	}
	return fmt.Errorf("open %s: %w", file, err)
}

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	var out []migration
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".sql") {
			return err
		}
		base := path.Base(p)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return fmt.Errorf("migration %s: name must be NNNN_name.sql", p)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s share version %d", out[i-1].name, out[i].name, out[i].version)
		}
	}
	return out, nil
}

// Migrate applies every migration newer than the database's user_version,
// each in its own write transaction. Two processes opening a fresh database
// at once are serialised by the immediate transaction: the second re-reads
// the version inside it and finds nothing to do.
func Migrate(ctx context.Context, db *sql.DB, fsys fs.FS) error {
	ms, err := loadMigrations(fsys)
	if err != nil {
		return err
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].version
	}
	current, err := SchemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if current > latest {
		return fmt.Errorf("%w: schema version %d, this keel knows up to %d; upgrade keel", ErrStateTooNew, current, latest)
	}
	for _, m := range ms {
		if m.version <= current {
			continue
		}
		if err := applyMigration(ctx, db, m); err != nil {
			return err
		}
	}
	return nil
}

func applyMigration(ctx context.Context, db *sql.DB, m migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	if v >= m.version {
		return nil // another process got here first
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", m.version)); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migration %s: %w", m.name, err)
	}
	return nil
}

// SchemaVersion returns the migration version the database is at.
func SchemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// StateInfo describes a state database for `keel state info`.
type StateInfo struct {
	Path          string `json:"path"`
	SchemaVersion int    `json:"schema_version"`
	LatestVersion int    `json:"latest_version"`
	JournalMode   string `json:"journal_mode"`
	Integrity     string `json:"integrity"`
	SizeBytes     int64  `json:"size_bytes"`
}

// Info reads the schema version and runs PRAGMA integrity_check.
func (s *State) Info(ctx context.Context) (StateInfo, error) {
	info := StateInfo{Path: s.Path}
	ms, err := loadMigrations(nodeMigrations)
	if err != nil {
		return info, err
	}
	info.LatestVersion = ms[len(ms)-1].version
	if info.SchemaVersion, err = SchemaVersion(ctx, s.DB); err != nil {
		return info, err
	}
	if err := s.DB.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&info.JournalMode); err != nil {
		return info, fmt.Errorf("state info: %w", err)
	}
	rows, err := s.DB.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return info, fmt.Errorf("state info: integrity check: %w", err)
	}
	defer rows.Close()
	var lines []string
	for rows.Next() {
		var l string
		if err := rows.Scan(&l); err != nil {
			return info, fmt.Errorf("state info: integrity check: %w", err)
		}
		lines = append(lines, l)
	}
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("state info: integrity check: %w", err)
	}
	info.Integrity = strings.Join(lines, "; ")
	if st, err := os.Stat(s.Path); err == nil {
		info.SizeBytes = st.Size()
	}
	return info, nil
}
