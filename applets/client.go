package applets

import (
	"fmt"
	"time"

	"keel/client"
	"keel/node"
	"keel/wire"
)

// ClientApplet is keel_client: it serves the volumes attached to this node.
type ClientApplet struct {
	Globals
}

const clientDescription = `keel_client serves every volume attached to this node as an NBD export.

The client's id is node.id. It asks mgmt (mgmt.api_url, mgmt.token_file)
every client.poll_interval for this client's attachments, and for each one
serves an NBD export (fixed newstyle, structured replies, base:allocation,
TRIM, WRITE_ZEROES, FLUSH, FUA, multi-conn) on the unix socket
<node.run_dir>/nbd/<globalId>.sock, links <client.dev_dir>/keel/<name> and
<client.dev_dir>/keel-byid/<globalId> to it, and, when client.nbd_listen is
set, also serves it by name on that TCP address:

    nbdinfo 'nbd+unix:///?socket=/run/keel/nbd/<globalId>.sock'
    qemu-img info nbd://127.0.0.1:10809/<name>

Writes go to every up replica and are acknowledged when all did; a replica
that does not answer within client.io_timeout is reported to mgmt and left
out only once mgmt committed it down. A volume taken over by another
attachment (a newer fencing token) is closed to its users with I/O errors.
On start it renews the fencing tokens of its read-write attachments before
it writes. Writes wait while mgmt has not accepted its heartbeat for
client.mgmt_lease (a client cut off from mgmt stops writing); reads go on.

It tells systemd it is ready (Type=notify) after the first sync with mgmt,
and on SIGTERM flushes and closes every export.

Exit status: 0 after a clean shutdown, 1 when it could not start.`

func runClient(name string, args []string) int {
	var cli ClientApplet
	return runApplet(name, clientDescription, &cli, args)
}

// Run serves until SIGTERM or SIGINT.
func (c *ClientApplet) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	secret, err := wire.ReadSecret(cfg.Mgmt.ClusterSecretFile)
	if err != nil {
		return err
	}
	api, err := apiClient(env)
	if err != nil {
		return err
	}
	svc := client.NewService(client.ServiceOptions{
		ClientID: uint32(cfg.Node.ID), Name: cfg.Node.DisplayName(), Version: node.Version,
		API: api, Secret: secret,
		RunDir: cfg.Node.RunDir, DevDir: cfg.Client.DevDir, TCPListen: cfg.Client.NBDListen,
		Poll: time.Duration(cfg.Client.PollInterval), Timeout: time.Duration(cfg.Client.IOTimeout), Lease: time.Duration(cfg.Client.MgmtLease),
		Conns: cfg.Client.Connections, Log: env.Log,
		Ready: func() {
			node.NotifyReady(env.Log)
			node.NotifyStatus(fmt.Sprintf("client %d serving its attachments", cfg.Node.ID))
			env.Log.Info("client ready", "id", cfg.Node.ID)
		},
	})
	err = svc.Run(env.Ctx)
	node.NotifyStopping()
	return err
}
