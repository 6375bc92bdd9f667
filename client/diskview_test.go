package client

import (
	"context"
	"log/slog"
	"slices"
	"testing"

	"keel/mgmt/apiclient"
)

// Update: access follows mgmt's view, a change of write eligibility is
// reported (with the disks to readmit), and a disk this frontend had mgmt
// mark down stays out until a reply of a later generation.
func TestDiskViewUpdate(t *testing.T) {
	d := NewDiskView(nil, slog.New(slog.DiscardHandler), 0)
	ctx := context.Background()
	reply := func(gen int64, disks map[string]apiclient.DiskLocation) apiclient.ClientVolumes {
		return apiclient.ClientVolumes{Generation: gen, Disks: disks}
	}
	up := apiclient.DiskLocation{Addr: "a", Up: true}
	rec := apiclient.DiskLocation{Addr: "a", Recovering: true}
	down := apiclient.DiskLocation{Addr: "a"}
	steps := []struct {
		gen     int64
		disks   map[string]apiclient.DiskLocation
		downAt  int64 // disk 2 committed down at this generation first (0: no)
		readmit []uint32
		changed bool
		access1 DiskAccess
		access2 DiskAccess
	}{
		{gen: 1, disks: map[string]apiclient.DiskLocation{"1": up, "2": up}, readmit: []uint32{1, 2}, changed: true, access1: DiskUp, access2: DiskUp},
		{gen: 2, disks: map[string]apiclient.DiskLocation{"1": up, "2": up}, access1: DiskUp, access2: DiskUp},
		{gen: 3, disks: map[string]apiclient.DiskLocation{"1": up, "2": down}, changed: true, access1: DiskUp, access2: DiskDown},
		{gen: 4, disks: map[string]apiclient.DiskLocation{"1": up, "2": rec}, readmit: []uint32{2}, changed: true, access1: DiskUp, access2: DiskWriteOnly},
		// Marked down by us at generation 6; a reply of generation 5 still
		// shows it recovering, which must not count.
		{gen: 5, disks: map[string]apiclient.DiskLocation{"1": up, "2": rec}, downAt: 6, changed: true, access1: DiskUp, access2: DiskDown},
		{gen: 6, disks: map[string]apiclient.DiskLocation{"1": up, "2": down}, access1: DiskUp, access2: DiskDown},
		{gen: 7, disks: map[string]apiclient.DiskLocation{"1": up, "2": rec}, readmit: []uint32{2}, changed: true, access1: DiskUp, access2: DiskWriteOnly},
		{gen: 8, disks: map[string]apiclient.DiskLocation{"2": up}, changed: true, access1: DiskDown, access2: DiskUp},
	}
	for _, s := range steps {
		if s.downAt != 0 {
			d.mu.Lock()
			d.downAt[2] = s.downAt
			d.mu.Unlock()
		}
		readmit, changed, err := d.Update(reply(s.gen, s.disks))
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(readmit)
		if !slices.Equal(readmit, s.readmit) || changed != s.changed {
			t.Errorf("generation %d: readmit %v changed %v, want %v %v", s.gen, readmit, changed, s.readmit, s.changed)
		}
		_, a1, _ := d.DiskAccess(ctx, 1)
		_, a2, _ := d.DiskAccess(ctx, 2)
		if a1 != s.access1 || a2 != s.access2 {
			t.Errorf("generation %d: access %v %v, want %v %v", s.gen, a1, a2, s.access1, s.access2)
		}
	}
	if _, _, err := d.Update(reply(9, map[string]apiclient.DiskLocation{"x": up})); err == nil {
		t.Error("a disk id that is not a number was taken")
	}
}
