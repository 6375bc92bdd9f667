// Package demo runs a real local keel cluster on this machine: one mgmt
// (or three or five Raft voters, each on its own node), three storage
// servers with two file-backed disks each, one block client,
// a replication-3 template and a volume attached to the client. Every
// process is the keel binary started under its applet's name, listening on
// loopback only. A second run reuses the data; Fresh starts over.
package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"keel/internal/freeport"
	"keel/mgmt/apiclient"
)

// Options of Run.
type Options struct {
	Dir        string
	Fresh      bool
	Binary     string // the keel binary; default: this process's executable
	VolumeSize int64
	Servers    int
	DiskSize   int64 // of each sparse disk file when it is created; default 8 GiB
	// Mgmt is the number of mgmt voters (1, 3 or 5; 0 means 1), on nodes
	// 1..Mgmt. A demo created with more keeps them; a larger number adds
	// voters to an existing demo.
	Mgmt int
	// Out receives progress and the final instructions; Status, when set,
	// is called every second with a one-line status until ctx ends.
	Out    io.Writer
	Status func(line string)
	Log    *slog.Logger
}

const (
	demoVolume   = "demo"
	demoTemplate = "demo-r3"
	diskSize     = 8 << 30 // default; sparse files: only written blocks take space
	clientNode   = 1
)

// ports are chosen once, on the first run, and kept in ports.json so that
// configs, URLs and demo.env stay valid across runs.
type ports struct {
	API     int   `json:"api"`  // node 1's mgmt API
	Raft    int   `json:"raft"` // node 1's Raft transport
	NBD     int   `json:"nbd"`
	Servers []int `json:"servers"`
	// MgmtAPI and MgmtRaft are the ports of the further mgmt voters, on
	// nodes 2, 3, ...
	MgmtAPI  []int `json:"mgmtApi,omitempty"`
	MgmtRaft []int `json:"mgmtRaft,omitempty"`
	ISCSI    int   `json:"iscsi,omitempty"` // keel_iscsi's portal on node 1
}

// mgmtNodes is how many mgmt voters the demo has.
func (p *ports) mgmtNodes() int { return 1 + len(p.MgmtAPI) }

// apiPort and raftPort are mgmt node n's ports (1 <= n <= mgmtNodes).
func (p *ports) apiPort(n int) int {
	if n == 1 {
		return p.API
	}
	return p.MgmtAPI[n-2]
}

func (p *ports) raftPort(n int) int {
	if n == 1 {
		return p.Raft
	}
	return p.MgmtRaft[n-2]
}

// apiURL is node n's mgmt API URL.
func (p *ports) apiURL(n int) string { return fmt.Sprintf("http://127.0.0.1:%d", p.apiPort(n)) }

// apiURLs lists every mgmt node's API URL, comma-separated: what every
// service's mgmt.api_url holds, so it fails over between them.
func (p *ports) apiURLs() string {
	var out []string
	for n := 1; n <= p.mgmtNodes(); n++ {
		out = append(out, p.apiURL(n))
	}
	return strings.Join(out, ",")
}

// Cluster is a running demo.
type Cluster struct {
	o     Options
	ports ports
	procs []*proc
	api   *apiclient.Client
	env   map[string]string
	last  statusSample // previous Status sample, for rates
}

type proc struct {
	role   string
	node   int
	cmd    *exec.Cmd
	log    *os.File
	done   chan error
	killed bool // by Kill: its exit is no failure of Stop
}

func (o *Options) nodeDir(n int) string  { return filepath.Join(o.Dir, fmt.Sprintf("node%d", n)) }
func (o *Options) configOf(n int) string { return filepath.Join(o.nodeDir(n), "keel.toml") }
func (o *Options) tokenFile() string     { return filepath.Join(o.Dir, "api-token") }
func (o *Options) secretFile() string    { return filepath.Join(o.Dir, "cluster-secret") }
func (o *Options) diskPath(n, d int) string {
	return filepath.Join(o.nodeDir(n), "disks", fmt.Sprintf("disk%d", d))
}

// diskID numbers disks per node: node n has disks n*10+1 and n*10+2.
func diskID(n, d int) int { return n*10 + d }

// Start brings the demo cluster up (creating it on the first run) and
// returns once the volume's NBD export is ready.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.Servers == 0 {
		o.Servers = 3
	}
	if o.VolumeSize == 0 {
		o.VolumeSize = 10 << 30
	}
	if o.Mgmt == 0 {
		o.Mgmt = 1
	}
	if o.DiskSize == 0 {
		o.DiskSize = diskSize
	}
	if o.Mgmt != 1 && o.Mgmt != 3 && o.Mgmt != 5 {
		return nil, fmt.Errorf("demo: %d mgmt voters: use 1, 3 or 5 (Raft needs a majority of them up)", o.Mgmt)
	}
	if o.Mgmt > o.Servers {
		return nil, fmt.Errorf("demo: %d mgmt voters on %d server nodes: each voter runs on its own server node; add servers or use fewer voters", o.Mgmt, o.Servers)
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Binary = exe
	}
	abs, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = abs
	if o.Fresh {
		o.step("removing %s (--fresh)", o.Dir)
		if err := os.RemoveAll(o.Dir); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	c := &Cluster{o: o}
	if err := c.prepare(); err != nil {
		return nil, err
	}
	if err := c.bringUp(ctx); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (o *Options) step(format string, args ...any) {
	fmt.Fprintf(o.Out, "==> "+format+"\n", args...)
}

// prepare writes the directory layout and ports (first run, or more mgmt
// voters than before) and the node configs.
func (c *Cluster) prepare() error {
	o := &c.o
	pf := filepath.Join(o.Dir, "ports.json")
	b, err := os.ReadFile(pf)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c.ports); err != nil {
			return fmt.Errorf("demo: %s: %w; remove the directory or use --fresh", pf, err)
		}
		if len(c.ports.Servers) != o.Servers {
			return fmt.Errorf("demo: %s was created with %d servers, not %d; use --fresh to start over", o.Dir, len(c.ports.Servers), o.Servers)
		}
		if have := c.ports.mgmtNodes(); have > o.Mgmt {
			o.step("the demo has %d mgmt voters; starting all of them", have)
			o.Mgmt = have
		}
	case errors.Is(err, os.ErrNotExist):
		o.step("creating the demo cluster in %s", o.Dir)
		free, err := freeport.Take(3 + o.Servers)
		if err != nil {
			return err
		}
		c.ports = ports{API: free[0], Raft: free[1], NBD: free[2], Servers: free[3:]}
	default:
		return fmt.Errorf("demo: %w", err)
	}
	if add := o.Mgmt - c.ports.mgmtNodes(); add > 0 {
		free, err := freeport.Take(2 * add)
		if err != nil {
			return err
		}
		c.ports.MgmtAPI = append(c.ports.MgmtAPI, free[:add]...)
		c.ports.MgmtRaft = append(c.ports.MgmtRaft, free[add:]...)
	}
	// Configs are written on every run: a voter added since changes every
	// node's mgmt.api_url.
	for n := 1; n <= o.Servers; n++ {
		if err := os.MkdirAll(filepath.Join(o.nodeDir(n), "disks"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(o.configOf(n), []byte(c.nodeConfig(n)), 0o644); err != nil {
			return err
		}
	}
	b, _ = json.MarshalIndent(c.ports, "", "  ")
	return os.WriteFile(pf, b, 0o644)
}

func (c *Cluster) nodeConfig(n int) string {
	o := c.o
	roles := []string{"server"}
	if n <= c.ports.mgmtNodes() {
		roles = append([]string{"mgmt"}, roles...)
	}
	if n == clientNode {
		roles = append(roles, "client")
	}
	rolesTOML, _ := json.Marshal(roles)
	mgmtAddrs := ""
	if n <= c.ports.mgmtNodes() {
		mgmtAddrs = fmt.Sprintf("listen = \"127.0.0.1:%d\"\nraft_addr = \"127.0.0.1:%d\"\n", c.ports.apiPort(n), c.ports.raftPort(n))
	}
	return fmt.Sprintf(`# keel demo node %[1]d (written by keel demo on every run)
[node]
id = %[1]d
name = "demo-n%[1]d"
roles = %[2]s
run_dir = %[3]q

[mgmt]
api_url = %[4]q
token_file = %[5]q
cluster_secret_file = %[6]q
%[7]sheartbeat_interval = "1s"
service_timeout = "5s"

[server]
disks = [%[8]q, %[9]q]
listen = "127.0.0.1:%[10]d"
socket = ""
direct_io = false

[client]
dev_dir = %[11]q
nbd_listen = "127.0.0.1:%[12]d"
`, n, rolesTOML, filepath.Join(o.nodeDir(n), "run"), c.ports.apiURLs(), o.tokenFile(), o.secretFile(), mgmtAddrs,
		o.diskPath(n, 1), o.diskPath(n, 2), c.ports.Servers[n-1], filepath.Join(o.Dir, "dev"), c.ports.NBD)
}

// keel runs a short keel command for node n and returns its output.
func (c *Cluster) keel(ctx context.Context, n int, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.o.Binary, append([]string{"--config", c.o.configOf(n), "--state-dir", filepath.Join(c.o.nodeDir(n), "state")}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("keel %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// cleanEnv drops KEEL_* variables so the node configs alone decide.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KEEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// cpuShare is how many CPUs each of the demo's processes schedules its
// goroutines on (GOMAXPROCS): an equal share of this machine's for each
// server and the client, at least one. A deployment gives each keel
// process cores of its own; the demo's share one machine, and a Go
// process that may run as many threads as there are CPUs keeps idle ones
// spinning and waking for work (on a 2-CPU machine one each took a
// replicated 4 KiB random write from about 8.6k to 10.2k IOPS). An
// operator's GOMAXPROCS in the demo's environment wins.
func cpuShare(servers int) int {
	return max(1, runtime.NumCPU()/(servers+1))
}

// start runs applet role for node n in the background, its output in
// node n's log directory.
func (c *Cluster) start(role string, n int) (*proc, error) {
	logDir := filepath.Join(c.o.nodeDir(n), "log")
	os.MkdirAll(logDir, 0o755)
	f, err := os.OpenFile(filepath.Join(logDir, role+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	env := cleanEnv()
	if os.Getenv("GOMAXPROCS") == "" {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(cpuShare(c.o.Servers)))
	}
	cmd := &exec.Cmd{Path: c.o.Binary, Args: []string{"keel_" + role, "--config", c.o.configOf(n),
		"--state-dir", filepath.Join(c.o.nodeDir(n), "state")}, Env: env, Stdout: f, Stderr: f}
	// Own process group: a Ctrl-C at the terminal reaches the demo, which
	// then stops the services in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start keel_%s of node %d: %w", role, n, err)
	}
	p := &proc{role: role, node: n, cmd: cmd, log: f, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	c.procs = append(c.procs, p)
	return p, nil
}

// waitFor polls cond until it returns true, one of the awaited processes
// exits or the time is up; the error names what was awaited and, for a
// process that exited, quotes the last line of its log and points at it.
func (c *Cluster) waitFor(ctx context.Context, what string, ps []*proc, limit time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(limit)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		for _, p := range ps {
			select {
			case err := <-p.done:
				p.done <- err
				return fmt.Errorf("demo: keel_%s of node %d exited (%v) while waiting for %s: %q; see %s", p.role, p.node, err, what, lastLine(p.log.Name()), p.log.Name())
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: timed out waiting for %s (last error: %v)", what, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lastLine is the last non-empty line of a log file: where a process that
// failed to start says why.
func lastLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func (c *Cluster) bringUp(ctx context.Context) error {
	o := c.o
	if _, err := os.Stat(o.tokenFile()); errors.Is(err, os.ErrNotExist) {
		o.step("initialising the cluster (keel cluster init)")
		if _, err := c.keel(ctx, clientNode, "cluster", "init", "--name", "demo", "--location", "local", "--sub-cluster", "a"); err != nil {
			return err
		}
	}
	// Every voter starts before the wait: a demo that has three needs two
	// of them up to elect a leader.
	var mgmt []*proc
	for n := 1; n <= o.Mgmt; n++ {
		o.step("starting keel_mgmt of node %d on 127.0.0.1:%d", n, c.ports.apiPort(n))
		p, err := c.start("mgmt", n)
		if err != nil {
			return err
		}
		mgmt = append(mgmt, p)
	}
	tok, err := apiclient.ReadToken(o.tokenFile())
	if err != nil {
		return err
	}
	// Until every voter has joined, only node 1 is sure to know the
	// cluster: a node still waiting to be added answers with no leader.
	first := apiclient.New(c.ports.apiURL(1), tok)
	var status clusterStatus
	if err := c.waitFor(ctx, "the management API", mgmt, 60*time.Second, func() (bool, error) {
		_, err := first.Get(ctx, "ClusterStatus", nil, &status)
		return err == nil && status.ClusterID != "" && status.Leader != "", err
	}); err != nil {
		return err
	}
	if err := c.joinVoters(ctx, first, mgmt, tok, &status); err != nil {
		return err
	}
	c.api = apiclient.New(c.ports.apiURLs(), tok)
	for n := 1; n <= o.Servers; n++ {
		for d := 1; d <= 2; d++ {
			p := o.diskPath(n, d)
			if _, err := os.Stat(p); err == nil {
				continue
			}
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			f.Truncate(o.DiskSize)
			f.Close()
			if _, err := c.keel(ctx, n, "disk", "init", p, "--id", strconv.Itoa(diskID(n, d)), "--cluster-id", status.ClusterID); err != nil {
				return err
			}
		}
	}
	o.step("starting %d keel_server processes with 2 file-backed disks each", o.Servers)
	var servers []*proc
	for n := 1; n <= o.Servers; n++ {
		p, err := c.start("server", n)
		if err != nil {
			return err
		}
		servers = append(servers, p)
	}
	want := 2 * o.Servers
	if err := c.waitFor(ctx, fmt.Sprintf("%d disks up", want), servers, 60*time.Second, func() (bool, error) {
		up, err := c.disksUp(ctx)
		return up >= want, err
	}); err != nil {
		return err
	}
	if err := c.ensureVolume(ctx); err != nil {
		return err
	}
	o.step("starting keel_client (node %d) and attaching volume %s", clientNode, demoVolume)
	cp, err := c.start("client", clientNode)
	if err != nil {
		return err
	}
	if err := c.waitFor(ctx, "the client", []*proc{cp}, 30*time.Second, func() (bool, error) {
		_, err := c.api.Post(ctx, "VolumesReassignWait", map[string]any{
			"reassign": []map[string]any{{"volume": demoVolume, "rw": []int{clientNode}}}, "attachTimeout": 10}, nil)
		return err == nil, err
	}); err != nil {
		return err
	}
	if err := c.startISCSI(ctx); err != nil {
		return err
	}
	return c.writeEnv()
}

// clusterStatus is the part of ClusterStatus the demo reads.
type clusterStatus struct {
	ClusterID string `json:"clusterId"`
	Leader    string `json:"leader"`
	Voters    []struct {
		ID string `json:"id"`
	} `json:"voters"`
}

// joinVoters adds mgmt nodes 2..Mgmt that are not voters yet (a new demo,
// or more voters asked for) with keel cluster join, and waits until the
// cluster has every voter.
func (c *Cluster) joinVoters(ctx context.Context, api *apiclient.Client, mgmt []*proc, token string, st *clusterStatus) error {
	isVoter := func(n int) bool {
		for _, v := range st.Voters {
			if v.ID == strconv.Itoa(n) {
				return true
			}
		}
		return false
	}
	for n := 2; n <= c.o.Mgmt; n++ {
		if isVoter(n) {
			continue
		}
		c.o.step("joining keel_mgmt of node %d to the Raft group (keel cluster join)", n)
		if _, err := c.keel(ctx, n, "cluster", "join", c.ports.apiURL(1), "--token", token); err != nil {
			return err
		}
	}
	return c.waitFor(ctx, fmt.Sprintf("%d mgmt voters with a leader", c.o.Mgmt), mgmt, 60*time.Second, func() (bool, error) {
		_, err := api.Get(ctx, "ClusterStatus", nil, st)
		return err == nil && len(st.Voters) >= c.o.Mgmt && st.Leader != "", err
	})
}

// Leader returns the node id of the mgmt leader (0 while there is none).
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	var st clusterStatus
	if _, err := c.api.Get(ctx, "ClusterStatus", nil, &st); err != nil {
		return 0, err
	}
	n, _ := strconv.Atoi(st.Leader)
	return n, nil
}

func (c *Cluster) disksUp(ctx context.Context) (int, error) {
	var disks map[string]struct {
		GenerationLeft int    `json:"generationLeft"`
		ServerID       int    `json:"serverId"`
		State          string `json:"state"`
	}
	if _, err := c.api.Get(ctx, "DisksList", nil, &disks); err != nil {
		return 0, err
	}
	up := 0
	for _, d := range disks {
		if d.GenerationLeft == -1 || d.State == "up" {
			up++
		}
	}
	return up, nil
}

func (c *Cluster) ensureVolume(ctx context.Context) error {
	var tmpls []struct {
		Name string `json:"name"`
	}
	if _, err := c.api.Get(ctx, "VolumeTemplatesList", nil, &tmpls); err != nil {
		return err
	}
	have := false
	for _, t := range tmpls {
		have = have || t.Name == demoTemplate
	}
	if !have {
		c.o.step("creating template %s (replication 3) and volume %s (%d GiB)", demoTemplate, demoVolume, c.o.VolumeSize>>30)
		if _, err := c.api.Post(ctx, "VolumeTemplateCreate", map[string]any{"name": demoTemplate, "replication": 3}, nil); err != nil {
			return err
		}
	}
	if _, err := c.api.Get(ctx, "Volume/"+demoVolume, nil, nil); err == nil {
		c.o.step("reusing volume %s", demoVolume)
		return nil
	}
	_, err := c.api.Post(ctx, "VolumeCreate", map[string]any{"name": demoVolume, "size": c.o.VolumeSize, "template": demoTemplate}, nil)
	return err
}

// Env is what demo.env holds.
func (c *Cluster) Env() map[string]string { return c.env }

func (c *Cluster) pids(role string) string {
	var out []string
	for _, p := range c.procs {
		if p.role == role {
			out = append(out, strconv.Itoa(p.cmd.Process.Pid))
		}
	}
	return strings.Join(out, " ")
}

func (c *Cluster) writeEnv() error {
	var vol []struct {
		GlobalID string `json:"globalId"`
	}
	if _, err := c.api.Get(ctx0(), "Volume/"+demoVolume, nil, &vol); err != nil || len(vol) == 0 {
		return fmt.Errorf("demo: read volume %s: %v", demoVolume, err)
	}
	gid := vol[0].GlobalID
	sock := filepath.Join(c.o.nodeDir(clientNode), "run", "nbd", gid+".sock")
	c.env = map[string]string{
		"KEEL_DEMO_DIR":        c.o.Dir,
		"KEEL_API_URL":         c.ports.apiURLs(),
		"KEEL_API_TOKEN_FILE":  c.o.tokenFile(),
		"KEEL_NBD_URI":         fmt.Sprintf("nbd://127.0.0.1:%d/%s", c.ports.NBD, demoVolume),
		"KEEL_NBD_SOCKET":      sock,
		"KEEL_NBD_UNIX_URI":    "nbd+unix:///?socket=" + sock,
		"KEEL_VOLUME":          demoVolume,
		"KEEL_VOLUME_GLOBALID": gid,
		"KEEL_TEMPLATE":        demoTemplate,
		"KEEL_CLIENT_ID":       strconv.Itoa(clientNode),
		"KEEL_CONFIG":          c.o.configOf(clientNode),
		"KEEL_MGMT_PIDS":       c.pids("mgmt"),
		"KEEL_SERVER_PIDS":     c.pids("server"),
		"KEEL_CLIENT_PIDS":     c.pids("client"),
	}
	c.iscsiEnv(c.env)
	var b strings.Builder
	b.WriteString("# keel demo: source this file in a shell (written by keel demo)\n")
	for _, k := range append(envOrder, iscsiEnvOrder...) {
		fmt.Fprintf(&b, "%s=%q\n", k, c.env[k])
	}
	return os.WriteFile(filepath.Join(c.o.Dir, "demo.env"), []byte(b.String()), 0o644)
}

var envOrder = []string{"KEEL_DEMO_DIR", "KEEL_API_URL", "KEEL_API_TOKEN_FILE", "KEEL_NBD_URI", "KEEL_NBD_SOCKET",
	"KEEL_NBD_UNIX_URI", "KEEL_VOLUME", "KEEL_VOLUME_GLOBALID", "KEEL_TEMPLATE", "KEEL_CLIENT_ID", "KEEL_CONFIG",
	"KEEL_MGMT_PIDS", "KEEL_SERVER_PIDS", "KEEL_CLIENT_PIDS"}

func ctx0() context.Context { return context.Background() }

// Instructions are the ready-to-paste commands printed once the demo runs.
func (c *Cluster) Instructions() string {
	e := c.env
	return fmt.Sprintf(`
keel demo is running: %d mgmt, %d servers (2 disks each), 1 client.
  API            %s   (token in %s)
  volume         %s (%d GiB, replication 3, template %s), globalId %s
  NBD            %s
                 %s
  variables      source %s

Try:
  qemu-img info %s
  nbdinfo %s
  head -c 64M /dev/urandom > rand.img && nbdcopy --progress rand.img %s
  fio --name=randrw --ioengine=nbd --uri=%s --rw=randrw --bs=4k --iodepth=32 --runtime=20 --time_based --direct=1
  KEEL_CONFIG=%s keel cluster status

Logs: %s/node*/log/. Ctrl-C (or SIGTERM) stops everything; a second run reuses the data, --fresh starts over.
`, c.o.Mgmt, c.o.Servers, e["KEEL_API_URL"], e["KEEL_API_TOKEN_FILE"], demoVolume, c.o.VolumeSize>>30, demoTemplate, e["KEEL_VOLUME_GLOBALID"],
		e["KEEL_NBD_URI"], e["KEEL_NBD_UNIX_URI"], filepath.Join(c.o.Dir, "demo.env"),
		e["KEEL_NBD_URI"], e["KEEL_NBD_URI"], e["KEEL_NBD_URI"], e["KEEL_NBD_URI"], e["KEEL_CONFIG"], c.o.Dir) + c.iscsiInstructions()
}

// Stop stops keel_iscsi, the client, the servers, then mgmt, each with
// SIGTERM (SIGKILL after 20 s), and returns the first unclean exit.
func (c *Cluster) Stop() error {
	var first error
	for _, role := range []string{"iscsi", "client", "server", "mgmt"} {
		for _, p := range c.procs {
			if p.role != role {
				continue
			}
			p.cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, p := range c.procs {
			if p.role != role {
				continue
			}
			select {
			case err := <-p.done:
				p.done <- err
				if err != nil && !p.killed && first == nil {
					first = fmt.Errorf("keel_%s of node %d: %w (see %s)", p.role, p.node, err, p.log.Name())
				}
			case <-time.After(20 * time.Second):
				p.cmd.Process.Kill()
				if first == nil {
					first = fmt.Errorf("keel_%s of node %d did not stop on SIGTERM; killed", p.role, p.node)
				}
			}
			p.log.Close()
		}
	}
	return first
}

// API is the management API client of the demo (for tests and tools).
func (c *Cluster) API() *apiclient.Client { return c.api }

func (c *Cluster) find(role string, n int) *proc {
	var found *proc
	for _, p := range c.procs {
		if p.role == role && p.node == n {
			found = p // the latest start
		}
	}
	return found
}

// Kill sends SIGKILL to keel_<role> of node n and waits for it to exit.
func (c *Cluster) Kill(role string, n int) error {
	p := c.find(role, n)
	if p == nil {
		return fmt.Errorf("demo: no keel_%s on node %d", role, n)
	}
	p.killed = true
	p.cmd.Process.Kill()
	err := <-p.done
	p.done <- err
	return nil
}

// Restart starts keel_<role> of node n again (after Kill) and returns its
// PID; it does not wait for the process to be ready.
func (c *Cluster) Restart(role string, n int) (int, error) {
	if p := c.find(role, n); p != nil {
		select {
		case err := <-p.done:
			p.done <- err
		default:
			return 0, fmt.Errorf("demo: keel_%s of node %d is still running", role, n)
		}
	}
	p, err := c.start(role, n)
	if err != nil {
		return 0, err
	}
	return p.cmd.Process.Pid, nil
}

// ClientNode is a block client started by AddClient.
type ClientNode struct {
	ID      int
	PID     int
	NBDAddr string // loopback TCP address serving its exports by name
	RunDir  string // its NBD sockets are RunDir/nbd/<globalId>.sock
}

// AddClient starts one more keel_client, as node n (n > the number of
// servers), with its own config, run directory and NBD port, and returns
// once it has synced with mgmt.
func (c *Cluster) AddClient(ctx context.Context, n int) (*ClientNode, error) {
	o := c.o
	if n <= o.Servers {
		return nil, fmt.Errorf("demo: node %d is a server node; pick an id above %d", n, o.Servers)
	}
	free, err := freeport.Take(1)
	if err != nil {
		return nil, err
	}
	run := filepath.Join(o.nodeDir(n), "run")
	cfg := fmt.Sprintf(`# keel demo client node %[1]d (written by keel demo)
[node]
id = %[1]d
name = "demo-n%[1]d"
roles = ["client"]
run_dir = %[2]q

[mgmt]
api_url = %[3]q
token_file = %[4]q
cluster_secret_file = %[5]q

[client]
dev_dir = %[6]q
nbd_listen = "127.0.0.1:%[7]d"
`, n, run, c.ports.apiURLs(), o.tokenFile(), o.secretFile(), filepath.Join(o.nodeDir(n), "dev"), free[0])
	if err := os.MkdirAll(o.nodeDir(n), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.configOf(n), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	stats := filepath.Join(run, "client-stats.json")
	os.Remove(stats)
	p, err := c.start("client", n)
	if err != nil {
		return nil, err
	}
	// The client writes its stats after every successful sync with mgmt.
	if err := c.waitFor(ctx, fmt.Sprintf("client %d", n), []*proc{p}, 30*time.Second, func() (bool, error) {
		_, err := os.Stat(stats)
		return err == nil, err
	}); err != nil {
		return nil, err
	}
	return &ClientNode{ID: n, PID: p.cmd.Process.Pid, NBDAddr: fmt.Sprintf("127.0.0.1:%d", free[0]), RunDir: run}, nil
}
