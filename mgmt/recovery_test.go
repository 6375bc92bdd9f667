package mgmt

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"keel/mgmt/apiclient"
)

// A disk that was down registers as recovering with a task; DiskReplicas
// names its peers and waits for the rw client's generation; progress fills
// the task; done with a stale disk generation is refused, with the right
// one marks the disk up and removes the task. A recovering disk can be
// marked down, which ends its task.
func TestRecoveryTaskLifecycle(t *testing.T) {
	_, c := mustNewService(t)
	ctx := context.Background()
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "vm1", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "vm1", "rw": []int{7}}}, nil)
	hb := func(gen int64) {
		mustPost(t, c, "ServiceHeartbeat", map[string]any{"type": "client", "id": 7, "nodeId": 7, "generation": gen}, nil)
	}
	hb(1)

	mustPost(t, c, "DiskMarkDown/100", map[string]any{"generation": 1}, nil)
	var reg struct {
		Info struct {
			State          string `json:"state"`
			DiskGeneration int64  `json:"diskGeneration"`
			Generation     int64  `json:"generation"`
		}
	}
	mustPost(t, c, "DiskRegister", map[string]any{"id": 100, "serverId": 1, "size": 1 << 40, "freeBytes": 1 << 39}, &reg.Info)
	if reg.Info.State != "recovering" {
		t.Fatalf("a returning disk registered as %q, want recovering", reg.Info.State)
	}
	var tasks []apiclient.Task
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 1 || tasks[0].DiskID != 100 || tasks[0].TransactionID != reg.Info.Generation {
		t.Fatalf("TasksList after the return: %+v %v (want disk 100 from generation %d)", tasks, err, reg.Info.Generation)
	}
	// Registering again (as every heartbeat does, space changed) keeps the
	// task and the disk generation.
	var again struct {
		Info struct {
			DiskGeneration int64 `json:"diskGeneration"`
		}
	}
	mustPost(t, c, "DiskRegister", map[string]any{"id": 100, "serverId": 1, "size": 1 << 40, "freeBytes": 1 << 38}, &again.Info)
	if again.Info.DiskGeneration != reg.Info.DiskGeneration {
		t.Fatalf("a repeated registration moved the disk generation %d -> %d", reg.Info.DiskGeneration, again.Info.DiskGeneration)
	}

	var dr apiclient.DiskReplicas
	if _, err := c.Get(ctx, "DiskReplicas/100", nil, &dr); err != nil {
		t.Fatal(err)
	}
	if dr.State != "recovering" || dr.RecoveryFrom != reg.Info.Generation || dr.ClientsReady || !slices.Equal(dr.WaitingClients, []int{7}) {
		t.Fatalf("DiskReplicas before the client caught up: %+v", dr)
	}
	if len(dr.Layers) != 1 || dr.Layers[0].Volume != "vm1" || len(dr.Layers[0].Sets) != dr.Layers[0].SetCount {
		t.Fatalf("DiskReplicas layers: %+v (replication 3 on 3 disks: every set holds disk 100)", dr.Layers)
	}
	for _, s := range dr.Layers[0].Sets {
		if len(s.Peers) != 2 || slices.Contains(s.Peers, 100) {
			t.Fatalf("set %d peers %v: want the two other disks", s.Index, s.Peers)
		}
	}
	if loc := dr.Disks["101"]; loc.State != "up" || loc.Server != 2 {
		t.Fatalf("peer 101: %+v", loc)
	}
	hb(dr.Generation)
	if _, err := c.Get(ctx, "DiskReplicas/100", nil, &dr); err != nil || !dr.ClientsReady {
		t.Fatalf("DiskReplicas after the client caught up: %+v %v", dr, err)
	}

	mustPost(t, c, "DiskRecoveryProgress/100", apiclient.DiskRecoveryProgress{DiskGeneration: reg.Info.DiskGeneration, All: 10, Done: 4, Dispatched: 5}, nil)
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 1 || tasks[0].AllObjects != 10 || tasks[0].CompletedObjects != 4 || tasks[0].DispatchedObjects != 5 {
		t.Fatalf("TasksList after progress: %+v %v", tasks, err)
	}
	_, err := c.Post(ctx, "DiskRecoveryDone/100", apiclient.DiskRecoveryDone{DiskGeneration: reg.Info.DiskGeneration - 1}, nil)
	var ae *apiclient.APIError
	if !errors.As(err, &ae) || ae.Name != string(ErrNotAllowed) {
		t.Fatalf("done with a stale disk generation: %v, want %s", err, ErrNotAllowed)
	}
	mustPost(t, c, "DiskRecoveryDone/100", apiclient.DiskRecoveryDone{DiskGeneration: reg.Info.DiskGeneration, Stats: map[string]any{"data_bytes": 4096}}, nil)
	var disks map[string]DiskSummary
	if _, err := c.Get(ctx, "DisksList", nil, &disks); err != nil || disks["100"].State != "up" {
		t.Fatalf("after done: disk 100 %+v %v", disks["100"], err)
	}
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 0 {
		t.Fatalf("TasksList after done: %+v %v", tasks, err)
	}
	var kv map[string]any
	if _, err := c.Get(ctx, "KVGet/keel.recovery.disk.100", nil, &kv); err != nil {
		t.Fatalf("the recovery report is not kept: %v", err)
	}

	// A recovering disk that stops answering goes down with its task.
	mustPost(t, c, "DiskMarkDown/101", map[string]any{"generation": 1}, nil)
	mustPost(t, c, "DiskRegister", map[string]any{"id": 101, "serverId": 2, "size": 1 << 40, "freeBytes": 1 << 39}, nil)
	mustPost(t, c, "DiskMarkDown/101", map[string]any{"generation": 1}, nil)
	if _, err := c.Get(ctx, "DisksList", nil, &disks); err != nil || disks["101"].State != "down" {
		t.Fatalf("recovering disk marked down: %+v %v", disks["101"], err)
	}
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 0 {
		t.Fatalf("TasksList after the recovering disk went down: %+v %v", tasks, err)
	}
}

// A recovering disk whose server stops heartbeating goes down with the
// server, and its task goes with it.
func TestRecoveryEndsWhenServerDown(t *testing.T) {
	_, c := mustNewServiceTimeout(t, time.Second)
	ctx := context.Background()
	hb := map[string]any{"type": "server", "id": 2, "nodeId": 2, "version": "t", "startTime": 1, "addr": "127.0.0.1:1"}
	mustPost(t, c, "ServiceHeartbeat", hb, nil)
	addDisks(t, c, 2)
	mustPost(t, c, "DiskMarkDown/100", map[string]any{"generation": 1}, nil)
	mustPost(t, c, "DiskRegister", map[string]any{"id": 100, "serverId": 2, "size": 1 << 40, "freeBytes": 1 << 39}, nil)
	var tasks []apiclient.Task
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 1 {
		t.Fatalf("TasksList: %+v %v", tasks, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var disks map[string]DiskSummary
		if _, err := c.Get(ctx, "DisksList", nil, &disks); err != nil {
			t.Fatal(err)
		}
		if disks["100"].State == "down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the recovering disk of a silent server is %q, want down", disks["100"].State)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Get(ctx, "TasksList", nil, &tasks); err != nil || len(tasks) != 0 {
		t.Fatalf("TasksList after the server went down: %+v %v", tasks, err)
	}
}

// A client that stopped heartbeating may be cut off from mgmt and still
// writing under its old disk set: recovery waits for it until its write
// grace (here the default, three service timeouts) has passed since its
// last heartbeat, not only until it is marked down.
func TestRecoveryWaitsOutSilentClient(t *testing.T) {
	_, c := mustNewServiceTimeout(t, time.Second)
	ctx := context.Background()
	for _, s := range []int{1, 2, 3} {
		mustPost(t, c, "ServiceHeartbeat", map[string]any{"type": "server", "id": s, "nodeId": s, "version": "t", "startTime": 1, "addr": "127.0.0.1:1"}, nil)
	}
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "vm1", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "vm1", "rw": []int{7}}}, nil)
	mustPost(t, c, "ServiceHeartbeat", map[string]any{"type": "client", "id": 7, "nodeId": 7, "generation": 1}, nil)
	silentSince := time.Now()
	mustPost(t, c, "DiskMarkDown/100", map[string]any{"generation": 1}, nil)
	mustPost(t, c, "DiskRegister", map[string]any{"id": 100, "serverId": 1, "size": 1 << 40, "freeBytes": 1 << 39}, nil)
	for {
		// The servers keep heartbeating; the client does not.
		for _, s := range []int{1, 2, 3} {
			mustPost(t, c, "ServiceHeartbeat", map[string]any{"type": "server", "id": s, "nodeId": s, "version": "t", "startTime": 1, "addr": "127.0.0.1:1"}, nil)
		}
		var dr apiclient.DiskReplicas
		if _, err := c.Get(ctx, "DiskReplicas/100", nil, &dr); err != nil {
			t.Fatal(err)
		}
		silent := time.Since(silentSince)
		if dr.ClientsReady {
			if silent < 3*time.Second {
				t.Fatalf("recovery may start %s after the client's last heartbeat, inside its write grace of 3s", silent.Round(time.Millisecond))
			}
			break
		}
		if !slices.Equal(dr.WaitingClients, []int{7}) {
			t.Fatalf("waiting clients %v, want [7]", dr.WaitingClients)
		}
		if silent > 10*time.Second {
			t.Fatalf("recovery still waits for a client silent for %s", silent.Round(time.Millisecond))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
