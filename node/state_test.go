package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
)

// The test binary doubles as a second process writing to a shared state
// database: KEEL_STATE_WRITER=<dir>:<tag>:<n> makes it insert n rows and exit.
func TestMain(m *testing.M) {
	if spec := os.Getenv("KEEL_STATE_WRITER"); spec != "" {
		os.Exit(stateWriter(spec))
	}
	os.Exit(m.Run())
}

func stateWriter(spec string) int {
	parts := strings.SplitN(spec, ":", 3)
	var n int
	fmt.Sscan(parts[2], &n)
	st, err := OpenState(context.Background(), parts[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer st.Close()
	for i := 0; i < n; i++ {
		if _, err := st.DB.Exec("INSERT INTO node_meta(key, value) VALUES (?, ?)", fmt.Sprintf("%s-%d", parts[1], i), "v"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

func mustOpenState(t *testing.T, dir string) *State {
	t.Helper()
	st, err := OpenState(context.Background(), dir)
	if err != nil {
		t.Fatalf("OpenState: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestStateOpenAndInfo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st := mustOpenState(t, dir)
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.SchemaVersion != info.LatestVersion || info.SchemaVersion < 1 {
		t.Errorf("schema %d, latest %d", info.SchemaVersion, info.LatestVersion)
	}
	if info.JournalMode != "wal" || info.Integrity != "ok" {
		t.Errorf("journal %q integrity %q", info.JournalMode, info.Integrity)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode: %v %v", fi.Mode(), err)
	}
}

func TestMigrations(t *testing.T) {
	ctx := context.Background()
	v1 := fstest.MapFS{"m/0001_a.sql": {Data: []byte("CREATE TABLE a(x INTEGER);")}}
	v2 := fstest.MapFS{
		"m/0001_a.sql": v1["m/0001_a.sql"],
		"m/0002_b.sql": {Data: []byte("ALTER TABLE a ADD COLUMN y TEXT; CREATE TABLE b(z);")},
	}
	path := filepath.Join(t.TempDir(), "x.db")
	db, err := OpenDB(ctx, path, v1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO a(x) VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	db, err = OpenDB(ctx, path, v2)
	if err != nil {
		t.Fatalf("upgrade: %v", err)
	}
	var x int
	if err := db.QueryRow("SELECT x FROM a WHERE y IS NULL").Scan(&x); err != nil || x != 1 {
		t.Fatalf("data lost in migration: %d %v", x, err)
	}
	if v, _ := SchemaVersion(ctx, db); v != 2 {
		t.Fatalf("version %d, want 2", v)
	}
	db.Close()

	// An older binary must refuse a newer database, untouched.
	before, _ := os.ReadFile(path)
	if _, err := OpenDB(ctx, path, v1); !errors.Is(err, ErrStateTooNew) {
		t.Fatalf("older schema set: err = %v, want ErrStateTooNew", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("refused open changed the database file")
	}

	// A failing migration leaves the database at the previous version.
	bad := fstest.MapFS{
		"m/0001_a.sql": v1["m/0001_a.sql"],
		"m/0002_b.sql": v2["m/0002_b.sql"],
		"m/0003_c.sql": {Data: []byte("CREATE TABLE c(q); SELECT * FROM nosuch;")},
	}
	if _, err := OpenDB(ctx, path, bad); err == nil || !strings.Contains(err.Error(), "0003_c.sql") {
		t.Fatalf("bad migration: err = %v", err)
	}
	db, err = OpenDB(ctx, path, v2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, _ := SchemaVersion(ctx, db); v != 2 {
		t.Fatalf("after failed migration: version %d, want 2", v)
	}
	if err := db.QueryRow("SELECT count(*) FROM c").Scan(new(int)); err == nil {
		t.Fatal("table of the failed migration exists")
	}
}

func TestMigrationNames(t *testing.T) {
	for name, fsys := range map[string]fstest.MapFS{
		"unnumbered": {"x.sql": {Data: []byte("SELECT 1;")}},
		"duplicate":  {"0001_a.sql": {Data: []byte("SELECT 1;")}, "0001_b.sql": {Data: []byte("SELECT 1;")}},
	} {
		if _, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestStateNotADatabase(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, StateFile)
	junk := bytes.Repeat([]byte("not sqlite "), 500)
	if err := os.WriteFile(p, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenState(context.Background(), dir)
	if !errors.Is(err, ErrNotState) || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want ErrNotState naming %s", err, p)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, junk) {
		t.Fatal("the bad file was changed")
	}
}

// Two processes (and goroutines in each) write to one fresh state database
// at once, including its first migration: every row lands, none fails busy.
func TestStateConcurrentProcesses(t *testing.T) {
	dir := t.TempDir()
	const perWriter = 150
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, tag := range []string{"p1", "p2"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), fmt.Sprintf("KEEL_STATE_WRITER=%s:%s:%d", dir, tag, perWriter))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				errs <- fmt.Errorf("writer %s: %v: %s", tag, err, out.String())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := mustOpenState(t, dir)
	var n int
	if err := st.DB.QueryRow("SELECT count(*) FROM node_meta").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2*perWriter {
		t.Fatalf("%d rows, want %d", n, 2*perWriter)
	}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	for _, content := range []string{"one", "two, longer"} {
		if err := WriteFileAtomic(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil || string(b) != content {
			t.Fatalf("content %q %v, want %q", b, err, content)
		}
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := WriteFileAtomic(filepath.Join(dir, "nosuchdir", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
}
