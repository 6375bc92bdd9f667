package mgmt

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
)

func mustNewStore(t *testing.T) (*Store, func(op, arg string, body any)) {
	t.Helper()
	s, err := OpenStore(context.Background(), filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	idx := uint64(0)
	return s, func(op, arg string, body any) {
		t.Helper()
		b, _ := json.Marshal(body)
		idx++
		if r := s.Apply(idx, &Command{Op: op, Arg: arg, Body: b, Time: 1700000000, Seed: int64(idx)}); r.Err != nil {
			t.Fatalf("%s %s: %v", op, arg, r.Err)
		}
	}
}

// TestListingMatchesPerRowQuery: the map-based listing and its hand-made
// JSON give exactly what the per-row join and encoding/json give.
func TestListingMatchesPerRowQuery(t *testing.T) {
	s, apply := mustNewStore(t)
	apply("ClusterInit", "", ClusterInitDesc{Name: "x", LocationID: "ab", SubClusterID: "a"})
	for d := 1; d <= 3; d++ {
		apply("DiskRegister", "", map[string]any{"id": d, "serverId": d, "size": 1 << 40, "freeBytes": 1 << 40})
	}
	apply("VolumeTemplateCreate", "", map[string]any{"name": "r2", "replication": 2, "iops": 100})
	for i := 0; i < 20; i++ {
		body := map[string]any{"name": fmt.Sprint("v", i), "size": 1 << 30, "template": "r2"}
		if i%3 == 0 {
			body["tags"] = map[string]string{"k": fmt.Sprint(i), "z": ""}
		}
		if i == 7 {
			delete(body, "name")
			body["bw"] = 5
		}
		apply("VolumeCreate", "", body)
	}
	apply("VolumeSnapshot", "v1", map[string]any{"name": "v1@a"})
	apply("VolumeSnapshot", "v1", map[string]any{})
	apply("VolumeSnapshot", "v2", map[string]any{"name": "v2@a", "bind": true})
	apply("VolumeCreate", "", map[string]any{"name": "clone", "parent": "v1@a", "reuseServer": true})
	apply("VolumeCreate", "", map[string]any{"name": "#odd:name", "parent": "v2@a"})
	apply("SnapshotDelete", "v1@a", nil)
	for _, snapshots := range []bool{false, true} {
		want, err := listVols(s.db, snapshots, "")
		if err != nil {
			t.Fatal(err)
		}
		got, err := listAllVols(s.db, snapshots)
		if err != nil {
			t.Fatal(err)
		}
		wantJSON, _ := json.Marshal(want)
		gotJSON, err := json.Marshal(got)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		json.Unmarshal(wantJSON, &a)
		json.Unmarshal(gotJSON, &b)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("snapshots=%v: listings differ:\nper-row: %s\nmaps:    %s", snapshots, wantJSON, gotJSON)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uote`, "back\\slash", "ctl\x01", "ünï", "<&>"} {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("%q: %s, want %s", s, got, want)
		}
	}
}
