package mgmt

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/hashicorp/raft"

	"keel/node"
)

//go:embed raftmigrations/*.sql
var raftMigrations embed.FS

// RaftLog is the Raft log and stable store in one SQLite database
// (raft.db). Each StoreLogs batch is one transaction, so a crash keeps
// either the whole batch or none of it; synchronous=FULL makes a returned
// StoreLogs durable, which Raft requires before acknowledging.
type RaftLog struct {
	db *sql.DB
}

var (
	_ raft.LogStore    = (*RaftLog)(nil)
	_ raft.StableStore = (*RaftLog)(nil)
)

// OpenRaftLog opens (creating) the Raft log database at path.
func OpenRaftLog(ctx context.Context, path string) (*RaftLog, error) {
	sub, err := fs.Sub(raftMigrations, "raftmigrations")
	if err != nil {
		return nil, err
	}
	db, err := node.OpenDB(ctx, path, sub)
	if err != nil {
		return nil, fmt.Errorf("open raft log: %w", err)
	}
	db.SetMaxOpenConns(1)
	return &RaftLog{db: db}, nil
}

// Close closes the database.
func (l *RaftLog) Close() error { return l.db.Close() }

// FirstIndex returns the first index written, 0 for none.
func (l *RaftLog) FirstIndex() (uint64, error) {
	var v sql.NullInt64
	err := l.db.QueryRow(`SELECT MIN(idx) FROM log`).Scan(&v)
	return uint64(v.Int64), err
}

// LastIndex returns the last index written, 0 for none.
func (l *RaftLog) LastIndex() (uint64, error) {
	var v sql.NullInt64
	err := l.db.QueryRow(`SELECT MAX(idx) FROM log`).Scan(&v)
	return uint64(v.Int64), err
}

// GetLog fills in the entry at index.
func (l *RaftLog) GetLog(index uint64, out *raft.Log) error {
	var appended int64
	err := l.db.QueryRow(`SELECT term, type, data, ext, appended FROM log WHERE idx = ?`, int64(index)).
		Scan(&out.Term, &out.Type, &out.Data, &out.Extensions, &appended)
	if errors.Is(err, sql.ErrNoRows) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("raft log: get %d: %w", index, err)
	}
	out.Index = index
	if appended != 0 {
		out.AppendedAt = time.Unix(0, appended)
	}
	return nil
}

// StoreLog stores one entry.
func (l *RaftLog) StoreLog(e *raft.Log) error { return l.StoreLogs([]*raft.Log{e}) }

// StoreLogs stores a batch of entries in one transaction.
func (l *RaftLog) StoreLogs(logs []*raft.Log) error {
	tx, err := l.db.Begin()
	if err != nil {
		return fmt.Errorf("raft log: store: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.Prepare(`INSERT OR REPLACE INTO log (idx, term, type, data, ext, appended) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("raft log: store: %w", err)
	}
	defer st.Close()
	for _, e := range logs {
		var appended int64
		if !e.AppendedAt.IsZero() {
			appended = e.AppendedAt.UnixNano()
		}
		if _, err := st.Exec(int64(e.Index), e.Term, int(e.Type), e.Data, e.Extensions, appended); err != nil {
			return fmt.Errorf("raft log: store %d: %w", e.Index, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("raft log: store: %w", err)
	}
	return nil
}

// DeleteRange deletes entries min..max inclusive (log compaction and
// conflict truncation).
func (l *RaftLog) DeleteRange(min, max uint64) error {
	if _, err := l.db.Exec(`DELETE FROM log WHERE idx >= ? AND idx <= ?`, int64(min), int64(max)); err != nil {
		return fmt.Errorf("raft log: delete %d..%d: %w", min, max, err)
	}
	return nil
}

// Set stores a stable value.
func (l *RaftLog) Set(key, val []byte) error {
	if _, err := l.db.Exec(`INSERT OR REPLACE INTO stable (k, v) VALUES (?, ?)`, key, val); err != nil {
		return fmt.Errorf("raft stable: set %s: %w", key, err)
	}
	return nil
}

// Get returns a stable value; a missing key is an empty value, as
// hashicorp/raft expects ("not found" is the error text it checks).
func (l *RaftLog) Get(key []byte) ([]byte, error) {
	var v []byte
	err := l.db.QueryRow(`SELECT v FROM stable WHERE k = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("not found")
	}
	if err != nil {
		return nil, fmt.Errorf("raft stable: get %s: %w", key, err)
	}
	return v, nil
}

// SetUint64 stores a stable integer.
func (l *RaftLog) SetUint64(key []byte, val uint64) error {
	return l.Set(key, []byte(fmt.Sprint(val)))
}

// GetUint64 returns a stable integer, 0 when missing.
func (l *RaftLog) GetUint64(key []byte) (uint64, error) {
	var v sql.NullInt64
	err := l.db.QueryRow(`SELECT CAST(v AS INTEGER) FROM stable WHERE k = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("raft stable: get %s: %w", key, err)
	}
	return uint64(v.Int64), nil
}
