package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
)

// run runs a tool and returns its standard output; a failure fails the test.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := runErr(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	path := testbin.NeedTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 60*1e9)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = t.TempDir() // fio leaves verify state files behind
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

func TestNBDInfoShowsEveryFeature(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{
		"disk": NewMemory(Info{Size: 64 << 20, MinBlock: 512, PreferredBlock: 4096, MaxBlock: 8 << 20}),
	})
	out := run(t, "nbdinfo", "--json", ts.uri("disk"))
	var got struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []map[string]any
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nbdinfo --json: %v\n%s", err, out)
	}
	if got.Protocol != "newstyle-fixed" || !got.Structured || len(got.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := got.Exports[0]
	for _, k := range []string{"can_fua", "can_flush", "can_trim", "can_zero", "can_fast_zero", "can_multi_conn", "can_cache", "can_df"} {
		if e[k] != true {
			t.Errorf("%s = %v, want true", k, e[k])
		}
	}
	if e["is_read_only"] != false {
		t.Errorf("is_read_only = %v", e["is_read_only"])
	}
	if ctxs, _ := e["contexts"].([]any); len(ctxs) != 1 || ctxs[0] != "base:allocation" {
		t.Errorf("contexts = %v, want [base:allocation]", e["contexts"])
	}
	want := map[string]float64{"export-size": 64 << 20, "block_size_minimum": 512, "block_size_preferred": 4096, "block_size_maximum": 8 << 20}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %v, want %v", k, e[k], v)
		}
	}
	if t.Failed() {
		t.Log(out)
	}
}

func TestNBDInfoListsExports(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{
		"a": NewMemory(Info{Size: 1 << 20}),
		"b": NewMemory(Info{Size: 2 << 20, ReadOnly: true}),
	})
	out := run(t, "nbdinfo", "--list", "--json", ts.uri(""))
	var got struct{ Exports []map[string]any }
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nbdinfo --list: %v\n%s", err, out)
	}
	if len(got.Exports) != 2 || got.Exports[0]["export-name"] != "a" || got.Exports[1]["export-name"] != "b" ||
		got.Exports[1]["is_read_only"] != true || got.Exports[1]["can_trim"] != false {
		t.Fatalf("nbdinfo --list: %s", out)
	}
}

// mapOf runs nbdinfo --map and returns its lines as "offset length desc".
func mapOf(t *testing.T, uri string) []string {
	out := run(t, "nbdinfo", "--map", uri)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 4 {
			t.Fatalf("nbdinfo --map line %q", l)
		}
		lines = append(lines, f[0]+" "+f[1]+" "+f[3])
	}
	return lines
}

func TestNBDInfoMapShowsHoles(t *testing.T) {
	ctx := context.Background()
	mem := NewMemory(Info{Size: 1 << 20})
	dir := t.TempDir()
	path := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 1<<20); err != nil {
		t.Fatal(err)
	}
	file, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	data := bytes.Repeat([]byte{0xa5}, 128<<10)
	for _, b := range []Backend{mem, file} {
		if err := b.WriteAt(ctx, data, 256<<10, false); err != nil {
			t.Fatal(err)
		}
	}
	ts := mustServe(t, false, map[string]Backend{"mem": mem, "file": file})
	want := []string{"0 262144 hole,zero", "262144 131072 data", "393216 655360 hole,zero"}
	for _, name := range []string{"mem", "file"} {
		if got := mapOf(t, ts.uri(name)); strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: map %q, want %q", name, got, want)
		}
	}
	// Trimming the data through NBD turns it back into a hole.
	for _, name := range []string{"mem", "file"} {
		run(t, "nbdcopy", "--", "[", "nbdkit", "--exit-with-parent", "null", "size=1M", "]", ts.uri(name))
		if got := mapOf(t, ts.uri(name)); len(got) != 1 || got[0] != "0 1048576 hole,zero" {
			t.Errorf("%s after zeroing copy: map %q", name, got)
		}
	}
}

// randomFile writes n random bytes to a new file.
func randomFile(t *testing.T, n int) (string, []byte) {
	data := make([]byte, n)
	rand.Read(data)
	// Leave a zero stretch so that sparse paths are exercised too.
	clear(data[n/4 : n/2])
	path := filepath.Join(t.TempDir(), "src.raw")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func TestNBDCopyRoundTrip(t *testing.T) {
	const size = 16 << 20
	src, data := randomFile(t, size)
	ts := mustServe(t, true, map[string]Backend{"disk": NewMemory(Info{Size: size})})
	for _, uri := range []string{ts.uri("disk"), "nbd://" + ts.tcp + "/disk"} {
		dst := filepath.Join(t.TempDir(), "dst.raw")
		run(t, "nbdcopy", "--connections=4", "--requests=32", src, uri)
		run(t, "nbdcopy", uri, dst)
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: data read back differs from data written", uri)
		}
	}
}

func TestQemuImgConvertCompare(t *testing.T) {
	const size = 8 << 20
	src, _ := randomFile(t, size)
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	file, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	ts := mustServe(t, true, map[string]Backend{"mem": NewMemory(Info{Size: size}), "file": file})
	for _, uri := range []string{ts.uri("mem"), ts.uri("file"), "nbd://" + ts.tcp + "/mem"} {
		run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	}
	// And compare notices a difference.
	if err := file.WriteAt(context.Background(), []byte{1}, size/3, false); err != nil {
		t.Fatal(err)
	}
	if out, err := runErr(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, ts.uri("file")); err == nil {
		t.Fatalf("qemu-img compare found no difference: %s", out)
	}
}

func TestFioVerify(t *testing.T) {
	ts := mustServe(t, true, map[string]Backend{"disk": NewMemory(Info{Size: 64 << 20})})
	for _, uri := range []string{ts.uri("disk"), "nbd://" + ts.tcp + "/disk"} {
		out := run(t, "fio", "--name=verify", "--ioengine=nbd", "--uri="+uri,
			"--rw=randwrite", "--bs=4k", "--iodepth=32", "--size=32M", "--numjobs=1",
			"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--output-format=json")
		var res struct {
			Jobs []struct {
				Error int `json:"error"`
				Write struct {
					IOBytes int64 `json:"io_bytes"`
				} `json:"write"`
				Read struct {
					IOBytes int64 `json:"io_bytes"`
				} `json:"read"`
			} `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
			t.Fatalf("fio json: %v\n%s", err, out)
		}
		if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Write.IOBytes != 32<<20 || res.Jobs[0].Read.IOBytes != 32<<20 {
			t.Fatalf("fio: %+v\n%s", res, out)
		}
	}
}
