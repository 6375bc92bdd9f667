package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"keel/internal/testbin"
)

// mapExtent is one entry of nbdinfo --map --json.
type mapExtent struct {
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	Type   int   `json:"type"` // 0 data, 3 hole+zero
}

// TestE2EBlockStatusThroughSnapshot: nbdinfo --map on a volume whose
// blocks come from its own layer and its snapshot parent shows data
// exactly where some layer wrote data and no later layer trimmed it, per
// 4 KiB block, and holes that read as zeroes everywhere else.
func TestE2EBlockStatusThroughSnapshot(t *testing.T) {
	nbdinfo := testbin.NeedTool(t, "nbdinfo")
	cl := startDemo(t)
	env := cl.Env()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	u, err := url.Parse(env["KEEL_NBD_URI"])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := dialNBD(u.Host, env["KEEL_VOLUME"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	write := func(off, n int64) {
		t.Helper()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i%251) + 1
		}
		if err := conn.WriteAt(b, off, false); err != nil {
			t.Fatalf("write %d+%d: %v", off, n, err)
		}
	}
	const k, m = 4 << 10, 1 << 20
	// Into the layer the snapshot will freeze: objects 0 and 1.
	write(0, 64*k)
	write(8*m+k, k)
	write(40*m, m)
	if _, err := cl.API().Post(ctx, "VolumeSnapshot/"+env["KEEL_VOLUME"], map[string]any{"name": "bs-snap"}, nil); err != nil {
		t.Fatalf("VolumeSnapshot: %v", err)
	}
	// Into the volume's fresh layer, over the snapshot: a trim of parent
	// data, a block beside the parent's in object 0, a new object 3.
	const nbdCmdTrim = 4
	if err := conn.do(nbdCmdTrim, 0, 32*k, 16*k, nil, nil); err != nil {
		t.Fatalf("trim: %v", err)
	}
	write(8*m+16*k, k)
	write(100*m, 2*k)
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}

	want := []mapExtent{
		{0, 32 * k, 0}, {32 * k, 16 * k, 3}, {48 * k, 16 * k, 0}, {64 * k, 8*m + k - 64*k, 3},
		{8*m + k, k, 0}, {8*m + 2*k, 14 * k, 3}, {8*m + 16*k, k, 0}, {8*m + 17*k, 32*m - 17*k, 3},
		{40 * m, m, 0}, {41 * m, 59 * m, 3}, {100 * m, 2 * k, 0}, {100*m + 2*k, e2eVolumeSize - 100*m - 2*k, 3},
	}
	out := mustRun(t, 60*time.Second, nbdinfo, "--map", "--json", env["KEEL_NBD_URI"])
	var got []mapExtent
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	// nbdinfo may split an extent where one reply ended: merge runs.
	var merged []mapExtent
	for _, e := range got {
		if n := len(merged); n > 0 && merged[n-1].Type == e.Type && merged[n-1].Offset+merged[n-1].Length == e.Offset {
			merged[n-1].Length += e.Length
			continue
		}
		merged = append(merged, e)
	}
	if fmt.Sprint(merged) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --map:\n got %v\nwant %v", merged, want)
	}
	t.Logf("nbdinfo --map: %d extents over the snapshot chain, as expected", len(merged))
}
