package applets

import (
	"fmt"
	"strings"
	"time"

	"keel/iscsi"
	"keel/node"
	"keel/wire"
)

// ISCSIApplet is keel_iscsi: the iSCSI target controller of this node.
type ISCSIApplet struct {
	Globals
	Poll time.Duration `name:"poll" default:"1s" help:"How often to read the iSCSI configuration and this controller's volumes from mgmt."`
}

const iscsiDescription = `keel_iscsi serves keel volumes to iSCSI initiators.

Its controller id is node.id. Every --poll it reads the cluster's iSCSI
configuration (keel iscsi show; API iSCSIConfig) and listens on every portal
of every portal group that names this controller. A target is one volume;
exporting it (keel iscsi export) makes mgmt pick the controller that serves
it and attach the volume read-write to client 16384+id (0x4000+id), so the
volume is fenced like any block-client attachment: it cannot be attached
elsewhere while exported, and a controller that lost it can no longer write.

A login is accepted only from an initiator of the configuration, from one
of its networks (any when it has none), with its CHAP secret when it has
one, and only to targets exported to it in the portal group of the portal
it connected to. Configuration changes apply without dropping other
sessions; sessions whose access was revoked are closed.

Every volume is served as LUN 0 of its target with 4 KiB logical blocks
through the volume I/O engine: writes reach every up replica, SYNCHRONIZE
CACHE flushes every replica, a resize raises CAPACITY DATA HAS CHANGED.
Persistent reservations and the addresses initiators logged in from are
kept in the node state (<state-dir>/node.db). Live sessions are reported to
mgmt (keel iscsi sessions; API iSCSISessionsInfo).

It tells systemd it is ready (Type=notify) after the first sync with mgmt,
and on SIGTERM closes its portals and flushes every volume.

"keel iscsi" without a subcommand runs this controller; "keel iscsi show",
"keel iscsi export", ... are the admin commands (keel iscsi show --help).

Exit status: 0 after a clean shutdown, 1 when it could not start.`

// runISCSI runs the controller; "keel iscsi SUBCOMMAND ..." (the
// controller takes no arguments) is the admin CLI's iscsi group instead.
func runISCSI(name string, args []string) int {
	if name == "iscsi" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return runCLI("keel", append([]string{"iscsi"}, args...))
	}
	var a ISCSIApplet
	return runApplet(name, iscsiDescription, &a, args)
}

// Run serves until SIGTERM or SIGINT.
func (a *ISCSIApplet) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	if cfg.Node.ID < 1 || cfg.Node.ID > 0x0fff {
		return fmt.Errorf("keel_iscsi: node.id %d is not a controller id (1..4095); set node.id", cfg.Node.ID)
	}
	secret, err := wire.ReadSecret(cfg.Mgmt.ClusterSecretFile)
	if err != nil {
		return err
	}
	api, err := apiClient(env)
	if err != nil {
		return err
	}
	st, err := env.State()
	if err != nil {
		return err
	}
	ctl := iscsi.NewController(iscsi.ControllerOptions{
		ID: cfg.Node.ID, Name: cfg.Node.DisplayName(), Version: node.Version, API: api, Secret: secret,
		Poll: a.Poll, Timeout: time.Duration(cfg.Client.IOTimeout), Lease: time.Duration(cfg.Client.MgmtLease), Conns: cfg.Client.Connections,
		State: st.DB, Log: env.Log,
		Ready: func() {
			node.NotifyReady(env.Log)
			node.NotifyStatus(fmt.Sprintf("iSCSI controller %d serving its portals", cfg.Node.ID))
			env.Log.Info("iscsi controller ready", "id", cfg.Node.ID)
		},
	})
	err = ctl.Run(env.Ctx)
	node.NotifyStopping()
	return err
}
