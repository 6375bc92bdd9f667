package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"keel/client"
)

// statusSample is the client's counters at one time.
type statusSample struct {
	at              time.Time
	ops, rb, wbytes int64
}

// Status returns one line: the volume's IOPS and bandwidth since the last
// call, how many disks and services are up, and which mgmt node leads.
func (c *Cluster) Status(ctx context.Context) string {
	io := "io: n/a"
	if b, err := os.ReadFile(filepath.Join(c.o.nodeDir(clientNode), "run", client.StatsFile)); err == nil {
		var st client.ClientStats
		if json.Unmarshal(b, &st) == nil {
			var cur statusSample
			cur.at = time.UnixMilli(st.Time)
			for _, v := range st.Volumes {
				cur.ops += v.ReadOps + v.WriteOps
				cur.rb += v.ReadBytes
				cur.wbytes += v.WriteBytes
			}
			if dt := cur.at.Sub(c.last.at).Seconds(); !c.last.at.IsZero() && dt > 0 {
				io = fmt.Sprintf("%6.0f IOPS  read %7.1f MiB/s  write %7.1f MiB/s",
					float64(cur.ops-c.last.ops)/dt, float64(cur.rb-c.last.rb)/dt/(1<<20), float64(cur.wbytes-c.last.wbytes)/dt/(1<<20))
			}
			if cur.at != c.last.at {
				c.last = cur
			}
		}
	}
	up, err := c.disksUp(ctx)
	health := fmt.Sprintf("disks up %d/%d", up, 2*c.o.Servers)
	if err != nil {
		health = "mgmt unreachable"
	}
	running, total := 0, 0
	var list map[string]json.RawMessage
	if _, err := c.api.Get(ctx, "ServicesList", nil, &list); err == nil {
		for _, raw := range list {
			var group map[string]struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(raw, &group) != nil {
				continue // "clusterStatus" and other scalars
			}
			for _, s := range group {
				total++
				if s.Status == "running" {
					running++
				}
			}
		}
	}
	leader := "mgmt leader: none"
	if n, err := c.Leader(ctx); err == nil && n > 0 {
		leader = fmt.Sprintf("mgmt leader: node %d", n)
	}
	return fmt.Sprintf("%s  |  %s  services running %d/%d  %s", io, health, running, total, leader)
}
