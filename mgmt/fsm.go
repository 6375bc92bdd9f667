package mgmt

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
)

// fsm is the Raft state machine: a thin shell over Store.
type fsm struct {
	store *Store
	dir   string // for temporary snapshot files
	log   *slog.Logger
}

var _ raft.FSM = (*fsm)(nil)

// Apply decodes a log entry and applies it; the Result is what the
// proposer's ApplyFuture.Response returns.
func (f *fsm) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return f.store.fail(l.Index, apiErr(ErrInternalError, "undecodable log entry %d: %v", l.Index, err))
	}
	return f.store.Apply(l.Index, &c)
}

// Snapshot copies the store into a temporary file (VACUUM INTO); Persist
// streams it to the snapshot sink while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	tmp, err := os.CreateTemp(f.dir, "snapshot-*.db")
	if err != nil {
		return nil, fmt.Errorf("fsm snapshot: %w", err)
	}
	tmp.Close()
	if err := f.store.SnapshotTo(tmp.Name()); err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	return &fileSnapshot{path: tmp.Name()}, nil
}

// Restore replaces the store with a snapshot's database file.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp, err := os.CreateTemp(f.dir, "restore-*.db")
	if err != nil {
		return fmt.Errorf("fsm restore: %w", err)
	}
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("fsm restore: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("fsm restore: %w", err)
	}
	tmp.Close()
	if err := f.store.ReplaceWith(context.Background(), tmp.Name()); err != nil {
		return err
	}
	f.log.Info("store restored from a snapshot", "applied_index", f.store.AppliedIndex(), "generation", f.store.Generation())
	return nil
}

type fileSnapshot struct{ path string }

func (s *fileSnapshot) Persist(sink raft.SnapshotSink) error {
	fh, err := os.Open(s.path)
	if err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm snapshot: %w", err)
	}
	defer fh.Close()
	if _, err := io.Copy(sink, fh); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fileSnapshot) Release() { os.Remove(s.path) }

// cleanTemp removes temporary snapshot files a crash left behind.
func cleanTemp(dir string) {
	for _, pat := range []string{"snapshot-*.db", "restore-*.db"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		for _, p := range m {
			os.Remove(p)
		}
	}
}
