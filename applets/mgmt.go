package applets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"keel/mgmt"
	"keel/mgmt/apiclient"
)

// MgmtCLI is keel_mgmt: one member of the management Raft group, serving
// the JSON API.
type MgmtCLI struct {
	Globals
}

const mgmtDescription = `keel_mgmt is the management service: a member of the Raft group of 1, 3 or
5 mgmt nodes that holds the cluster configuration (servers, disks,
placement groups, templates, volumes, snapshots, attachments), and the
StorPool-compatible JSON API at mgmt.listen (docs/API.md).

The store lives in <state-dir>/mgmt/. On a node where "keel cluster init"
ran, the first start bootstraps a one-voter cluster; other nodes wait to be
added by "keel cluster join". The process waits for the cluster secret file
(mgmt.cluster_secret_file) and the API token file (mgmt.token_file) to
exist.

Configuration keys: mgmt.listen, mgmt.raft_addr, mgmt.api_advertise,
mgmt.snapshot_threshold, mgmt.trailing_logs, mgmt.snapshot_interval,
mgmt.service_timeout, mgmt.client_write_grace, mgmt.reuse_server_implicit,
node.id (the member id).

Exit status: 0 after SIGTERM/SIGINT, 1 when the service failed, 2 for a
wrong invocation.`

func runMgmt(name string, args []string) int {
	var cli MgmtCLI
	return runApplet(name, mgmtDescription, &cli, args)
}

// Run serves until the process is told to stop.
func (c *MgmtCLI) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	m := cfg.Mgmt
	secret, token, err := waitForSecrets(env, m.ClusterSecretFile, m.TokenFile)
	if err != nil {
		return err
	}
	svc, err := mgmt.StartService(env.Ctx, mgmt.ServiceConfig{
		NodeID:            cfg.Node.ID,
		Dir:               filepath.Join(env.Globals.StateDir, "mgmt"),
		RaftAddr:          m.RaftAddr,
		Listen:            m.Listen,
		APIAdvertise:      m.APIAdvertise,
		Secret:            secret,
		Token:             token,
		SnapshotThreshold: uint64(m.SnapshotThreshold),
		TrailingLogs:      uint64(m.TrailingLogs),
		SnapshotInterval:  time.Duration(m.SnapshotInterval),
		ServiceTimeout:    time.Duration(m.ServiceTimeout),
		ClientWriteGrace:  time.Duration(m.ClientWriteGrace),
		ReuseImplicit:     m.ReuseServer,
		Log:               env.Log,
	})
	if err != nil {
		return err
	}
	env.Log.Info("keel_mgmt serving", "api", m.Listen, "raft", m.RaftAddr, "node", cfg.Node.ID)
	svc.NotifyReady()
	<-env.Ctx.Done()
	env.Log.Info("keel_mgmt stopping")
	return svc.Close()
}

// waitForSecrets waits until the cluster secret and the API token exist
// (written by keel cluster init or join), logging once what it waits for.
func waitForSecrets(env *Env, secretFile, tokenFile string) ([]byte, string, error) {
	logged := false
	for {
		secret, serr := mgmt.ReadSecret(secretFile)
		token, terr := apiclient.ReadToken(tokenFile)
		if serr == nil && terr == nil {
			return secret, token, nil
		}
		for _, err := range []error{serr, terr} {
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, "", err
			}
		}
		if !logged {
			env.Log.Info("waiting for the cluster secret and API token; run keel cluster init or keel cluster join",
				"secret_file", secretFile, "token_file", tokenFile)
			logged = true
		}
		select {
		case <-env.Ctx.Done():
			return nil, "", fmt.Errorf("keel_mgmt: stopped before the cluster secret appeared in %s", secretFile)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// fileExists reports whether path exists.
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
