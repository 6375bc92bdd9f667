package applets

import (
	"fmt"
	"net"
	"time"

	"keel/mgmt/apiclient"
	"keel/node"
	"keel/server"
	"keel/wire"
)

// ServerApplet is keel_server: it owns the node's data disks and serves the
// data protocol.
type ServerApplet struct {
	Globals
}

const serverDescription = `keel_server opens this node's keel disks and serves keel's data protocol.

Disks are those listed in server.disks plus those recorded by keel disk
init. The data protocol listens on server.listen (TCP) and server.socket
(unix, for clients on this host); every connection must prove it holds the
cluster secret (mgmt.cluster_secret_file) before any request is read. When
mgmt is reachable (mgmt.api_url, mgmt.token_file) the server heartbeats and
registers its disks every mgmt.heartbeat_interval.

It tells systemd it is ready (Type=notify) once it listens, and on SIGTERM
stops accepting, finishes the requests in flight, flushes and closes every
disk.

Exit status: 0 after a clean shutdown, 1 when a disk or listener failed.`

func runServer(name string, args []string) int {
	var cli ServerApplet
	return runApplet(name, serverDescription, &cli, args)
}

// Run serves until SIGTERM or SIGINT.
func (c *ServerApplet) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	secret, err := wire.ReadSecret(cfg.Mgmt.ClusterSecretFile)
	if err != nil {
		return err
	}
	disks, err := localDiskPaths(env)
	if err != nil {
		return err
	}
	if len(disks) == 0 {
		env.Log.Warn("no disks: set server.disks or run keel disk init")
	}
	seen := map[string]bool{}
	var unique []string
	for _, d := range disks {
		if !seen[d] {
			seen[d] = true
			unique = append(unique, d)
		}
	}
	opts := server.Options{Disks: unique, Listen: cfg.Server.Listen, Socket: cfg.Server.Socket, Secret: secret,
		NodeID: uint32(cfg.Node.ID), Name: cfg.Node.DisplayName(), Concurrency: cfg.Server.Concurrency, DirectIO: cfg.Server.DirectIO, DirectWritesFrom: cfg.Server.DirectWritesFrom,
		DiskTimeout:        time.Duration(cfg.Server.DiskTimeout),
		CheckpointInterval: time.Duration(cfg.Server.CheckpointEvery), FlushInterval: time.Duration(cfg.Server.FlushEvery), Log: env.Log,
		HeartbeatInterval: time.Duration(cfg.Mgmt.HeartbeatInterval), Version: node.Version,
		RecoveryRate: uint64(cfg.Server.RecoveryRateMB) << 20, RecoverySettle: time.Duration(cfg.Server.RecoverySettle),
		ScrubRate: uint64(cfg.Server.ScrubRateMB) << 20,
		Ready: func(addrs []net.Addr) {
			node.NotifyReady(env.Log)
			node.NotifyStatus(fmt.Sprintf("serving %d disks on %v", len(unique), addrs))
		}}
	if st, err := env.State(); err == nil {
		opts.State = st.DB
	} else {
		return err
	}
	if tok, err := apiclient.ReadToken(cfg.Mgmt.TokenFile); err == nil {
		opts.Mgmt = apiclient.New(cfg.Mgmt.APIURL, tok)
	} else {
		env.Log.Warn("not registering with mgmt", "err", err)
	}
	err = server.Run(env.Ctx, opts)
	node.NotifyStopping()
	return err
}
