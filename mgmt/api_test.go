package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"keel/mgmt/apiclient"
)

const testToken = "test-token-0123456789"

// mustNewService starts a one-voter mgmt in-process on loopback ports with
// an initialised cluster and returns it with an API client.
func mustNewService(t *testing.T) (*Service, *apiclient.Client) {
	t.Helper()
	return mustNewServiceTimeout(t, time.Hour)
}

func mustNewServiceTimeout(t *testing.T, serviceTimeout time.Duration) (*Service, *apiclient.Client) {
	t.Helper()
	dir := t.TempDir()
	init, _ := json.Marshal(ClusterInitDesc{Name: "lab", Location: "here", LocationID: "zz9", SubClusterID: "a"})
	if err := os.WriteFile(filepath.Join(dir, InitFile), init, 0o600); err != nil {
		t.Fatal(err)
	}
	svc, err := StartService(context.Background(), ServiceConfig{
		NodeID: 1, Dir: dir, RaftAddr: "127.0.0.1:0", Listen: "127.0.0.1:0",
		Secret: []byte(strings.Repeat("s", 64)), Token: testToken,
		SnapshotThreshold: 1024, TrailingLogs: 128, ServiceTimeout: serviceTimeout,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	c := apiclient.New(svc.apiAddr(), testToken)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st ClusterStatusReply
		_, err := c.Get(context.Background(), "ClusterStatus", nil, &st)
		if err == nil && st.ClusterID == "zz9.a" && len(st.Voters) == 1 && st.Voters[0].APIAddr != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service not ready: %+v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return svc, c
}

func mustPost(t *testing.T, c *apiclient.Client, call string, body, out any) {
	t.Helper()
	if _, err := c.Post(context.Background(), call, body, out); err != nil {
		t.Fatalf("%s: %v", call, err)
	}
}

// addDisks registers n disks, one per server 1..n (or per servers[i]).
func addDisks(t *testing.T, c *apiclient.Client, servers ...int) {
	t.Helper()
	for i, s := range servers {
		mustPost(t, c, "DiskRegister", map[string]any{"id": 100 + i, "serverId": s, "size": 1 << 40, "freeBytes": 1 << 39}, nil)
	}
}

func rawCall(t *testing.T, method, u, auth, body string) (int, map[string]json.RawMessage) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: reply is not a JSON object: %s", method, u, b)
	}
	return resp.StatusCode, m
}

func TestAPIContract(t *testing.T) {
	svc, c := mustNewService(t)
	base := svc.apiAddr() + "/ctrl/1.0/"
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "t2", "replication": 2}, nil)
	for _, tc := range []struct {
		name, method, path, auth, body string
		status                         int
		errName, descrHas              string
	}{
		{"no token", "GET", "VolumesList", "", "", 401, ErrAuth, "token"},
		{"wrong token", "GET", "VolumesList", "Storpool v1:nope", "", 401, ErrAuth, "token"},
		{"wrong bearer", "GET", "VolumesList", "Bearer nope", "", 401, ErrAuth, "token"},
		{"unknown call", "GET", "NoSuchCall", "Bearer " + testToken, "", 404, ErrInvalidCall, "NoSuchCall"},
		{"unknown object", "GET", "Volume/nosuch", "Bearer " + testToken, "", 404, ErrNotFound, "nosuch"},
		{"unknown template", "GET", "VolumeTemplateDescribe/nosuch", "Bearer " + testToken, "", 404, ErrNotFound, "nosuch"},
		{"bad json", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":`, 400, ErrInvalidJSON, "JSON"},
		{"wrong type", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a","size":"big"}`, 400, ErrInvalidParam, "size"},
		{"unknown field", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a","sise":512}`, 400, ErrInvalidParam, "sise"},
		{"bad size", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a","size":1000,"template":"t2"}`, 400, ErrInvalidParam, "size"},
		{"bad name", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a b","size":1024,"template":"t2"}`, 400, ErrInvalidParam, "name"},
		{"bad replication", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a","size":1024,"replication":4}`, 400, ErrInvalidParam, "replication"},
		{"missing template", "POST", "VolumeCreate", "Bearer " + testToken, `{"name":"a","size":1024,"template":"nope"}`, 404, ErrNotFound, "template nope"},
		{"wrong method", "GET", "VolumeCreate", "Bearer " + testToken, "", 404, ErrInvalidCall, "method"},
		{"bad query json", "GET", "VolumesList?json=" + url.QueryEscape("{x"), "Bearer " + testToken, "", 400, ErrInvalidJSON, "json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, m := rawCall(t, tc.method, base+tc.path, tc.auth, tc.body)
			if status != tc.status {
				t.Errorf("status %d, want %d (%s)", status, tc.status, m["error"])
			}
			var e Error
			if err := json.Unmarshal(m["error"], &e); err != nil {
				t.Fatalf("no error object: %v", m)
			}
			if e.Name != tc.errName || !strings.Contains(e.Descr, tc.descrHas) {
				t.Errorf("error %+v, want name %s and descr naming %q", e, tc.errName, tc.descrHas)
			}
		})
	}

	// Envelopes: reads carry generation and data; writes ok, generation
	// and info, also inside data as python-storpool reads it.
	status, m := rawCall(t, "POST", base+"VolumeCreate", "Storpool v1:"+testToken, `{"name":"v1","size":1073741824,"template":"t2"}`)
	if status != 200 || string(m["ok"]) != "true" || m["generation"] == nil || m["info"] == nil {
		t.Fatalf("write envelope: %d %v", status, m)
	}
	var inner struct {
		OK         bool  `json:"ok"`
		Generation int64 `json:"generation"`
		Info       struct {
			GlobalID string `json:"globalId"`
		} `json:"info"`
	}
	if err := json.Unmarshal(m["data"], &inner); err != nil || !inner.OK || inner.Generation == 0 || !strings.HasPrefix(inner.Info.GlobalID, "zz9.a.") {
		t.Fatalf("write data: %s %v", m["data"], err)
	}
	status, m = rawCall(t, "GET", base+"VolumesList", "Bearer "+testToken, "")
	var list []VolumeSummary
	if status != 200 || json.Unmarshal(m["data"], &list) != nil || len(list) != 1 || list[0].Name != "v1" {
		t.Fatalf("read envelope: %d %s", status, m["data"])
	}
	var gen int64
	if json.Unmarshal(m["generation"], &gen); gen < inner.Generation {
		t.Errorf("read generation %d is older than the write's %d", gen, inner.Generation)
	}

	// A create of a taken name is refused by name; replication 3 on three
	// servers works, on two it is refused naming what is missing.
	_, err := c.Post(context.Background(), "VolumeCreate", map[string]any{"name": "v1", "size": 1 << 30, "template": "t2"}, nil)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.Name != ErrExists || ae.Status != 409 {
		t.Errorf("duplicate create: %v", err)
	}
	// A DiskRegister that repeats the stored figures commits nothing.
	var before, after struct {
		Generation int64 `json:"generation"`
	}
	disk := map[string]any{"id": 100, "serverId": 1, "size": 1 << 40, "freeBytes": 1<<39 - 1<<20}
	mustPost(t, c, "DiskRegister", disk, &before)
	mustPost(t, c, "DiskRegister", disk, &after)
	if after.Generation != before.Generation {
		t.Errorf("a repeated DiskRegister raised the generation %d -> %d", before.Generation, after.Generation)
	}
	disk["freeBytes"] = 1 << 38
	mustPost(t, c, "DiskRegister", disk, &after)
	if after.Generation == before.Generation {
		t.Errorf("a DiskRegister with new space figures was not committed")
	}
	mustPost(t, c, "DiskEject/102", nil, nil)
	_, err = c.Post(context.Background(), "VolumeCreate", map[string]any{"name": "v3", "size": 1 << 30, "replication": 3}, nil)
	if !errors.As(err, &ae) || ae.Name != ErrInsufficient || !strings.Contains(ae.Descr, "replication 3") {
		t.Errorf("create without enough servers: %v", err)
	}
}

func TestVolumeLifecycle(t *testing.T) {
	_, c := mustNewService(t)
	ctx := context.Background()
	addDisks(t, c, 1, 2, 3, 4)
	mustPost(t, c, "PlacementGroupUpdate/ssd", map[string]any{"addDisks": []int{100, 101, 102}}, nil)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "fast", "replication": 2, "placeAll": "ssd", "placeTail": "ssd"}, nil)

	var created struct {
		Name, GlobalID string
	}
	mustPost(t, c, "VolumeCreate", map[string]any{"size": 1 << 30, "template": "fast"}, &created)
	if !strings.HasPrefix(created.Name, "~zz9.a.") {
		t.Fatalf("nameless volume: %+v", created)
	}
	var vols []VolumeDetail
	if _, err := c.Get(ctx, "Volume/"+created.Name, nil, &vols); err != nil || len(vols) != 1 {
		t.Fatalf("Volume/~globalId: %v %v", vols, err)
	}
	for _, set := range vols[0].TargetDiskSets {
		if len(set) != 2 || set[0] == set[1] || set[0] > 102 || set[1] > 102 {
			t.Errorf("disk set %v breaks the template (2 distinct ssd disks)", set)
		}
	}
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "vm1", "size": 1 << 30, "template": "fast", "tags": map[string]string{"vc": "x"}}, nil)
	mustPost(t, c, "VolumeUpdate/vm1", map[string]any{"sizeAdd": 1 << 30}, nil)
	_, err := c.Post(ctx, "VolumeUpdate/vm1", map[string]any{"size": 1 << 29}, nil)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Descr, "shrinkOk") {
		t.Errorf("shrink without shrinkOk: %v", err)
	}
	var snap struct {
		SnapshotName string `json:"snapshotName"`
	}
	mustPost(t, c, "VolumeSnapshot/vm1", map[string]any{"name": "vm1@1"}, &snap)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "clone", "parent": "vm1@1"}, nil)
	var clone []VolumeDetail
	var snapD []VolumeDetail
	c.Get(ctx, "Volume/clone", nil, &clone)
	c.Get(ctx, "Snapshot/vm1@1", nil, &snapD)
	if clone[0].ParentName != "vm1@1" || clone[0].Size != 2<<30 || len(clone[0].TargetDiskSets) != len(snapD[0].TargetDiskSets) {
		t.Errorf("clone: %+v", clone[0].VolumeSummary)
	}

	// Attachments: one rw per volume; every rw attach raises the token.
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "vm1", "rw": []int{1}}}, nil)
	_, err = c.Post(ctx, "VolumesReassign", []map[string]any{{"volume": "vm1", "rw": []int{2}}}, nil)
	if !errors.As(err, &ae) || ae.Name != ErrInUse {
		t.Errorf("second rw attach: %v", err)
	}
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "vm1", "rw": []int{2}, "force": true}}, nil)
	var atts []AttachmentDesc
	c.Get(ctx, "AttachmentsList", nil, &atts)
	if len(atts) != 1 || atts[0].Client != 2 || atts[0].FencingToken != 2 || atts[0].Rights != "rw" {
		t.Errorf("attachments after forced re-attach: %+v", atts)
	}
	_, err = c.Post(ctx, "VolumeDelete/vm1", nil, nil)
	if !errors.As(err, &ae) || ae.Name != ErrInUse {
		t.Errorf("delete of an attached volume: %v", err)
	}
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "vm1", "detach": "all"}}, nil)
	mustPost(t, c, "VolumeRevert/vm1", map[string]any{"toSnapshot": "vm1@1"}, nil)

	// Deleting a snapshot with children keeps it (deleted) until the last
	// child goes.
	mustPost(t, c, "SnapshotDelete/vm1@1", nil, nil)
	var snaps []VolumeSummary
	c.Get(ctx, "SnapshotsList", nil, &snaps)
	if len(snaps) != 1 || snaps[0].Deleted == nil || !*snaps[0].Deleted {
		t.Fatalf("snapshot with children after delete: %+v", snaps)
	}
	mustPost(t, c, "VolumeDelete/vm1", nil, nil)
	mustPost(t, c, "VolumeDelete/clone", nil, nil)
	c.Get(ctx, "SnapshotsList", nil, &snaps)
	if len(snaps) != 0 {
		t.Errorf("deleted snapshot outlived its children: %+v", snaps)
	}

	// KV and NodeStopCheck.
	mustPost(t, c, "KVSet", map[string]any{"key": "a", "value": "b"}, nil)
	var kv KVPair
	if _, err := c.Get(ctx, "KVGet/a", nil, &kv); err != nil || kv.Value != "b" {
		t.Errorf("KVGet: %+v %v", kv, err)
	}
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "r1", "size": 1 << 30, "replication": 1, "placeTail": "ssd"}, nil)
	var chk NodeStopCheck
	if _, err := c.Get(ctx, "NodeStopCheck/1", nil, &chk); err != nil || chk.Safe {
		t.Errorf("stopping server 1 with single-replica data on it: %+v %v", chk, err)
	}
	if _, err := c.Get(ctx, "NodeStopCheck/4", nil, &chk); err != nil || !chk.Safe {
		t.Errorf("stopping server 4 (no ssd disk, r1 lives on ssd): %+v %v", chk, err)
	}
}

// TestTransportRefusesWithoutSecret: a Raft peer that does not know the
// cluster secret never gets a connection through.
func TestTransportRefusesWithoutSecret(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	good, err := newAuthStream("127.0.0.1:0", []byte(strings.Repeat("a", 64)), log)
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	bad, err := newAuthStream("127.0.0.1:0", []byte(strings.Repeat("b", 64)), log)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	if _, err := bad.Dial(raftAddr(good.Addr()), time.Second); !errors.Is(err, ErrBadSecret) && err == nil {
		t.Fatalf("dial with the wrong secret: %v", err)
	}
	same, _ := newAuthStream("127.0.0.1:0", []byte(strings.Repeat("a", 64)), log)
	defer same.Close()
	conn, err := same.Dial(raftAddr(good.Addr()), time.Second)
	if err != nil {
		t.Fatalf("dial with the right secret: %v", err)
	}
	conn.Close()
	acc, err := good.Accept()
	if err != nil {
		t.Fatal(err)
	}
	acc.Close()
	// A plain TCP client (no handshake) is dropped, not accepted.
	raw, err := net.Dial("tcp", good.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(make([]byte, 64))
	buf := make([]byte, 100)
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _ := io.ReadFull(raw, buf)
	if n > 32 {
		t.Errorf("an unauthenticated peer got %d bytes back", n)
	}
	raw.Close()
}

func raftAddr(a net.Addr) raftServerAddress { return raftServerAddress(a.String()) }

type raftServerAddress = raft.ServerAddress

// TestServiceLiveness: a server that stops sending heartbeats is marked
// down after the timeout, with its disks, in a committed change; a new
// heartbeat brings it back.
func TestServiceLiveness(t *testing.T) {
	_, c := mustNewServiceTimeout(t, time.Second)
	ctx := context.Background()
	hb := map[string]any{"type": "server", "id": 2, "nodeId": 2, "version": "t", "startTime": 1, "addr": "127.0.0.1:1"}
	mustPost(t, c, "ServiceHeartbeat", hb, nil)
	addDisks(t, c, 2)
	status := func() (string, string) {
		var st struct {
			Servers map[string]map[string]any `json:"servers"`
		}
		var disks map[string]DiskSummary
		if _, err := c.Get(ctx, "ServicesList", nil, &st); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "DisksList", nil, &disks); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(st.Servers["2"]["status"]), disks["100"].State
	}
	if s, d := status(); s != "running" || d != "up" {
		t.Fatalf("after heartbeat: server %s, disk %s", s, d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, d := status()
		if s == "down" && d == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never marked down: server %s, disk %s", s, d)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustPost(t, c, "ServiceHeartbeat", hb, nil)
	if s, _ := status(); s != "running" {
		t.Fatalf("after a new heartbeat: server %s", s)
	}
}

// TestNamesNeedingEscapes: names with '#', '@' and ':' reach the server
// intact through the Go client.
func TestNamesNeedingEscapes(t *testing.T) {
	_, c := mustNewService(t)
	addDisks(t, c, 1)
	for _, name := range []string{"#hidden", "vm:1", "a.b-c_d"} {
		mustPost(t, c, "VolumeCreate", map[string]any{"name": name, "size": 1 << 20, "replication": 1}, nil)
		var v []VolumeDetail
		if _, err := c.Get(context.Background(), "Volume/"+name, nil, &v); err != nil || v[0].Name != name {
			t.Errorf("Volume/%s: %v %v", name, v, err)
		}
		snap := strings.TrimPrefix(name, "#") + "@1"
		mustPost(t, c, "VolumeSnapshot/"+name, map[string]any{"name": snap}, nil)
		if _, err := c.Get(context.Background(), "Snapshot/"+snap, nil, &v); err != nil || v[0].Name != snap {
			t.Errorf("Snapshot/%s: %v", snap, err)
		}
	}
}
