package applets

import (
	"fmt"
	"os"
	"time"

	"keel/demo"
	"keel/node"
)

// DemoCmd runs a local demo cluster.
type DemoCmd struct {
	Dir   string `default:"keel-demo" help:"Directory holding the demo cluster's configs, state, disks and logs (default ./keel-demo)." placeholder:"DIR"`
	Fresh bool   `help:"Delete the demo directory first and start a new cluster."`
	Size  string `default:"10G" help:"Size of the demo volume when it is created (e.g. 10G, 512M)."`
	Mgmt  int    `default:"1" enum:"1,3" help:"Number of mgmt Raft voters (1 or 3), each on its own server node; a demo that has more keeps them."`
}

// Help is the long help of `keel demo`.
func (c *DemoCmd) Help() string {
	return `Builds and runs a real keel cluster on this machine, on loopback only:
one keel_mgmt (--mgmt 3: three Raft voters on nodes 1-3, and every
service's mgmt.api_url lists them all), three keel_server processes with
two file-backed (sparse) disks each, and one keel_client. It creates a
replication-3 template and a volume, attaches it to the client, prints the
API endpoint, where the API token is, the NBD URIs and ready-to-paste
commands (qemu-img, nbdinfo, nbdcopy, fio), and writes the same as shell
variables to DIR/demo.env: KEEL_API_URL (every mgmt node, comma-separated),
KEEL_API_TOKEN_FILE, KEEL_NBD_URI, KEEL_VOLUME, KEEL_TEMPLATE,
KEEL_CLIENT_ID, KEEL_MGMT_PIDS, KEEL_SERVER_PIDS, KEEL_CLIENT_PIDS and more.

It also runs keel_iscsi on node 1 and exports a second volume of the same
size, demo-iscsi, on a loopback portal to the default initiator names of
libiscsi's tools and QEMU: KEEL_ISCSI_URL (iscsi://127.0.0.1:PORT/IQN/0)
works with iscsi-ls, iscsi-inq and qemu-img as they are; KEEL_ISCSI_PIDS.

It then shows a live status line (IOPS, bandwidth, disks and services up,
the mgmt leader) until Ctrl-C or SIGTERM, and stops every process it
started: keel_iscsi, the client, the servers, then mgmt. Without a terminal it prints
plain progress lines and runs until SIGTERM. A second run reuses the data;
--fresh starts over.

Each process logs to DIR/node<N>/log/<applet>.log. The loopback ports are
chosen on the first run, from below the kernel's ephemeral port range (so
no outgoing connection takes one before its service binds it), and kept in
DIR/ports.json; a second run uses them again. The processes share
this machine as a deployment would give each its own cores: each runs
with GOMAXPROCS set to an equal share of the CPUs for the three servers
and the client (at least 1), unless GOMAXPROCS is set for keel demo.

Exit status: 0 after a clean stop, 1 when the cluster could not start or a
process did not stop cleanly.`
}

// Run starts the demo and waits for a signal.
func (c *DemoCmd) Run(env *Env) error {
	size, err := parseSize(c.Size)
	if err != nil {
		return usageError("--size: %v", err)
	}
	tty := node.IsTerminal(os.Stdout)
	cl, err := demo.Start(env.Ctx, demo.Options{Dir: c.Dir, Fresh: c.Fresh, VolumeSize: size, Mgmt: c.Mgmt, Out: env.Stdout, Log: env.Log})
	if err != nil {
		return err
	}
	fmt.Fprint(env.Stdout, cl.Instructions())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := ""
loop:
	for {
		select {
		case <-env.Ctx.Done():
			break loop
		case <-tick.C:
			line := cl.Status(env.Ctx)
			switch {
			case tty:
				fmt.Fprintf(env.Stdout, "\r\033[K%s", line)
			case line != last:
				fmt.Fprintln(env.Stdout, line)
			}
			last = line
		}
	}
	if tty {
		fmt.Fprintln(env.Stdout)
	}
	fmt.Fprintln(env.Stdout, "==> stopping the demo cluster")
	if err := cl.Stop(); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout, "==> stopped; run again to reuse the data, or with --fresh to start over")
	return nil
}
