package applets

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"keel/mgmt"
	"keel/mgmt/apiclient"
	"keel/node"
)

// ClusterCmd groups the cluster lifecycle commands.
type ClusterCmd struct {
	Init   ClusterInitCmd   `cmd:"" help:"Create a new cluster on this mgmt node: ids, cluster secret, API token."`
	Join   ClusterJoinCmd   `cmd:"" help:"Add this node's keel_mgmt to an existing cluster as a Raft voter."`
	Status ClusterStatusCmd `cmd:"" help:"Show the cluster's identity, generation, mgmt voters and leader."`
	Cmd    ClusterRemoteCmd `cmd:"" help:"Run a command against another cluster of the multi-cluster (RemoteCommand/NAME/)."`
}

// ClusterInitCmd is `keel cluster init`.
type ClusterInitCmd struct {
	Name       string `required:"" help:"Cluster name (letters, digits, _-.:)."`
	Location   string `required:"" help:"Location name; the location id is drawn at random."`
	SubCluster string `name:"sub-cluster" default:"a" help:"Sub-cluster id within the location (1..8 lowercase base-36 characters)."`
}

// Help is the long help of `keel cluster init`.
func (c *ClusterInitCmd) Help() string {
	return `Run once, on the first mgmt node, before or after starting keel_mgmt there.
It writes, all 0600:
  - the API token to mgmt.token_file,
  - the cluster secret (HMAC key of the Raft transport and of the data-path
    handshake) to mgmt.cluster_secret_file,
  - <state-dir>/mgmt/init.json with the cluster identity.
keel_mgmt then bootstraps a one-voter Raft group and commits the identity:
name, location, a random location id and the sub-cluster id, which make the
cluster id <locationId>.<subClusterId> and every globalId
<locationId>.<subClusterId>.<objectId>.

Refuses when a secret, token or init file already exists.

Example:
  keel cluster init --name lab --location sofia --sub-cluster a`
}

// Run initialises the cluster files.
func (c *ClusterInitCmd) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	sub := c.SubCluster
	locID := randomBase36(4)
	desc := mgmt.ClusterInitDesc{Name: c.Name, Location: c.Location, LocationID: locID, SubClusterID: sub}
	body, _ := json.Marshal(desc)
	if _, err := mgmt.DecodeRequest("ClusterInit", body); err != nil {
		return usageError("cluster init: %v", err)
	}
	dir := filepath.Join(env.Globals.StateDir, "mgmt")
	initFile := filepath.Join(dir, mgmt.InitFile)
	for _, p := range []string{cfg.Mgmt.ClusterSecretFile, cfg.Mgmt.TokenFile, initFile} {
		if fileExists(p) {
			return fmt.Errorf("cluster init: %s already exists; this node already belongs to a cluster (remove it only to start a new cluster)", p)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	token := randomHex(24)
	if err := writeSecretFile(cfg.Mgmt.TokenFile, token); err != nil {
		return err
	}
	if err := node.WriteFileAtomic(initFile, body, 0o600); err != nil {
		return fmt.Errorf("cluster init: %w", err)
	}
	// The secret last: keel_mgmt waits for it, then finds init.json.
	if err := writeSecretFile(cfg.Mgmt.ClusterSecretFile, mgmt.NewSecret()); err != nil {
		return err
	}
	if env.Globals.JSON {
		return env.PrintJSON(map[string]any{"clusterId": locID + "." + sub, "name": c.Name, "location": c.Location,
			"tokenFile": cfg.Mgmt.TokenFile, "secretFile": cfg.Mgmt.ClusterSecretFile})
	}
	fmt.Fprintf(env.Stdout, "cluster %s (id %s.%s, location %s) initialised\napi token: %s\ncluster secret: %s\nstart keel_mgmt on this node; then run keel cluster join on the others\n",
		c.Name, locID, sub, c.Location, cfg.Mgmt.TokenFile, cfg.Mgmt.ClusterSecretFile)
	return nil
}

func writeSecretFile(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return node.WriteFileAtomic(path, []byte(value+"\n"), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func randomBase36(n int) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = digits[int(b[i])%len(digits)]
	}
	if b[0] == '0' {
		b[0] = 'k'
	}
	return string(b)
}

// ClusterJoinCmd is `keel cluster join`.
type ClusterJoinCmd struct {
	API   string `arg:"" name:"URL" help:"API URL of any mgmt node of the cluster (e.g. http://10.0.0.1:8081)."`
	Token string `help:"API token of the cluster; default: the content of mgmt.token_file, which is written when given here." placeholder:"TOKEN"`
}

// Help is the long help of `keel cluster join`.
func (c *ClusterJoinCmd) Help() string {
	return `Joins this node's keel_mgmt (node.id, mgmt.raft_addr, mgmt.api_advertise or
mgmt.listen) to the cluster served at URL:
  1. fetches the cluster secret (ClusterSecret, needs the API token) and
     writes it 0600 to mgmt.cluster_secret_file, and the token to
     mgmt.token_file when --token is given;
  2. asks the leader to add this node as a Raft voter (MgmtJoin).
Start keel_mgmt on this node first: it waits for the secret file, then
starts its Raft transport, which the leader must reach to add it (MgmtJoin
fails after 30s otherwise; run join again). The new voter catches up from a
snapshot and the log.

Example:
  keel cluster join http://10.0.0.1:8081 --token "$(cat api-token)"`
}

// Run joins.
func (c *ClusterJoinCmd) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	token := c.Token
	if token == "" {
		if token, err = apiclient.ReadToken(cfg.Mgmt.TokenFile); err != nil {
			return fmt.Errorf("cluster join: %w; give --token", err)
		}
	}
	api := apiclient.New(c.API, token)
	ctx, cancel := context.WithTimeout(env.Ctx, 60*time.Second)
	defer cancel()
	var sec struct {
		Secret string `json:"secret"`
	}
	if _, err := api.Get(ctx, "ClusterSecret", nil, &sec); err != nil {
		return fmt.Errorf("cluster join: %w", err)
	}
	if c.Token != "" && !fileExists(cfg.Mgmt.TokenFile) {
		if err := writeSecretFile(cfg.Mgmt.TokenFile, token); err != nil {
			return err
		}
	}
	if !fileExists(cfg.Mgmt.ClusterSecretFile) {
		if err := writeSecretFile(cfg.Mgmt.ClusterSecretFile, sec.Secret); err != nil {
			return err
		}
	}
	adv := cfg.Mgmt.APIAdvertise
	if adv == "" {
		adv = "http://" + cfg.Mgmt.Listen
	}
	req := mgmt.MgmtJoinDesc{ID: cfg.Node.ID, RaftAddr: cfg.Mgmt.RaftAddr, APIAddr: adv}
	var err2 error
	for attempt := 0; attempt < 20; attempt++ {
		if _, err2 = api.Post(ctx, "MgmtJoin", req, nil); err2 == nil {
			break
		}
		if ae, ok := err2.(*apiclient.APIError); !ok || !ae.Transient {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err2 != nil {
		return fmt.Errorf("cluster join: %w", err2)
	}
	if env.Globals.JSON {
		return env.PrintJSON(req)
	}
	fmt.Fprintf(env.Stdout, "node %d (raft %s, api %s) joined the cluster at %s\n", req.ID, req.RaftAddr, req.APIAddr, c.API)
	return nil
}

// ClusterStatusCmd is `keel cluster status`.
type ClusterStatusCmd struct{}

// Help is the long help of `keel cluster status`.
func (c *ClusterStatusCmd) Help() string {
	return `Asks the mgmt node at mgmt.api_url for ClusterStatus: the cluster name, id,
generation (committed configuration changes), the applied Raft index of
that node, and each mgmt voter with its Raft and API address and whether it
leads. Exit status 1 when the API cannot be reached or there is no leader.`
}

// Run prints the status.
func (c *ClusterStatusCmd) Run(env *Env) error {
	var st mgmt.ClusterStatusReply
	printed, err := apiGet(env, "ClusterStatus", &st)
	if err != nil || printed {
		return err
	}
	fmt.Fprintf(env.Stdout, "cluster %s (id %s, location %s)\ngeneration %d, applied index %d\n", st.Name, st.ClusterID, st.Location, st.Generation, st.AppliedIndex)
	rows := [][]string{{"ID", "RAFT", "API", "ROLE"}}
	for _, v := range st.Voters {
		role := "follower"
		if v.Leader {
			role = "leader"
		}
		if v.Suffrage != "Voter" {
			role += " (" + v.Suffrage + ")"
		}
		rows = append(rows, []string{v.ID, v.RaftAddr, v.APIAddr, role})
	}
	if err := table(env, rows); err != nil {
		return err
	}
	if st.Leader == "" {
		return fmt.Errorf("cluster status: no mgmt leader")
	}
	return nil
}

// ClusterRemoteCmd is `keel cluster cmd NAME COMMAND...`.
type ClusterRemoteCmd struct {
	Cluster string   `arg:"" name:"NAME" help:"Name of the cluster to run the command in."`
	Command []string `arg:"" name:"COMMAND" passthrough:"" help:"The keel command and its arguments."`
}

// Help is the long help of `keel cluster cmd`.
func (c *ClusterRemoteCmd) Help() string {
	return `Runs a keel API command through RemoteCommand/NAME/: the local mgmt relays it
to cluster NAME. Until the bridge links clusters, only the local cluster's
own name is served.

Example:
  keel cluster cmd lab-b volume list`
}

// Run runs the command with the remote prefix.
func (c *ClusterRemoteCmd) Run(env *Env) error {
	remoteCluster = c.Cluster
	var cli CLI
	code := runApplet("keel", cliDescription, &cli, append(globalArgs(env), c.Command...))
	if code != 0 {
		return &ExitError{Code: code}
	}
	return nil
}

func globalArgs(env *Env) []string {
	out := []string{"--config", env.Globals.Config, "--state-dir", env.Globals.StateDir}
	if env.Globals.JSON {
		out = append(out, "--json")
	}
	return out
}

// itoa is strconv.Itoa, for table cells.
func itoa(n int) string { return strconv.Itoa(n) }
