package client_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"keel/internal/testbin"
)

// TestE2EClientRestart: a restarted client process writes under a fresh
// fencing token (ClientTokensRenew), so its writes replace what the
// previous process wrote to the same blocks. (Versions are token<<40 | a
// sequence that restarts with the process; under the old token the new
// writes would rank below the old ones and the servers would keep the
// old data.)
func TestE2EClientRestart(t *testing.T) {
	qio := testbin.NeedTool(t, "qemu-io")
	cl := startDemo(t)
	env := cl.Env()
	uri := env["KEEL_NBD_URI"]
	ctx := context.Background()
	token := func() int64 {
		var vols []struct {
			Name         string `json:"name"`
			FencingToken int64  `json:"fencingToken"`
		}
		if _, err := cl.API().Get(ctx, "VolumesList", nil, &vols); err != nil {
			t.Fatal(err)
		}
		for _, v := range vols {
			if v.Name == env["KEEL_VOLUME"] {
				return v.FencingToken
			}
		}
		t.Fatalf("volume %s not listed", env["KEEL_VOLUME"])
		return 0
	}
	// Writes of many sequence numbers, so that the next process's first
	// ones would rank below them under the same token.
	args := []string{"-f", "raw"}
	for i := 0; i < 64; i++ {
		args = append(args, "-c", "write -P 0x11 0 64k")
	}
	mustRun(t, time.Minute, qio, append(args, uri)...)
	for round, pattern := range []string{"0x22", "0x33"} {
		before := token()
		if err := cl.Kill("client", 1); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Restart("client", 1); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, err := run(t, 10*time.Second, qio, "-f", "raw", "-c", "write -P "+pattern+" 0 64k", uri)
			if err == nil && !strings.Contains(out, "error") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no write through the restarted client: %v\n%s", round, err, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
		out, err := run(t, 10*time.Second, qio, "-f", "raw", "-c", "read -P "+pattern+" 0 64k", uri)
		if err != nil || strings.Contains(out, "Pattern verification failed") {
			t.Fatalf("round %d: the restarted client's write did not replace the old data: %v\n%s", round, err, out)
		}
		if after := token(); after <= before {
			t.Fatalf("round %d: fencing token %d after the client restarted, was %d: not renewed", round, after, before)
		}
	}
}
