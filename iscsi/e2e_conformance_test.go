package iscsi

import (
	"path/filepath"
	"testing"

	"keel/internal/testbin"
)

// TestVolumeConformance runs iscsi-test-cu, one process per suite, against
// the demo's replication-3 volume and checks every result against
// testdata/iscsi-test-cu-volume.expected.
func TestVolumeConformance(t *testing.T) {
	testbin.NeedTool(t, "iscsi-test-cu")
	cl := startDemo(t)
	got := runConformance(t, cl.Env()["KEEL_ISCSI_URL"])
	checkConformance(t, got, filepath.Join("testdata", "iscsi-test-cu-volume.expected"), "TestVolumeConformance")
}
