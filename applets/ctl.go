package applets

import (
	"context"
	"errors"
	"time"

	"keel/ctl"
	"keel/mgmt/apiclient"
)

// CtlCLI is keel_ctl: service control of this node through systemd.
type CtlCLI struct {
	Globals

	Status  CtlStatusCmd  `cmd:"" help:"Show one row per keel service: unit, state, enabled, main PID, uptime, last exit."`
	Start   CtlStartCmd   `cmd:"" help:"Start the services (mgmt, then server, then client/bridge/iscsi, then the rest)."`
	Stop    CtlStopCmd    `cmd:"" help:"Stop the services, in reverse start order; stopping the server is checked with mgmt first."`
	Restart CtlRestartCmd `cmd:"" help:"Restart the services in start order; restarting the server is checked with mgmt first."`
	Enable  CtlEnableCmd  `cmd:"" help:"Enable the services so that systemd starts them at boot."`
	Disable CtlDisableCmd `cmd:"" help:"Disable the services so that systemd no longer starts them at boot."`
}

const ctlDescription = `keel_ctl starts, stops, restarts, enables, disables and reports the keel
services installed on this node, through systemd's D-Bus API.

The services are every keel_*.service unit file systemd finds in its unit
paths plus one per role in the configuration's node.roles; naming services
(mgmt, keel_mgmt, keel_mgmt.service or storpool_mgmt) limits the command to
them. Run "keel_ctl VERB --help" for the details of a verb.

Exit status: 0 when every service reached the asked state, 1 when some did
not (each is named, with the last lines of its journal), 2 for a wrong
invocation.`

func runCtl(name string, args []string) int {
	var cli CtlCLI
	return runApplet(name, ctlDescription, &cli, args)
}

// CtlVerbCmd is one verb of keel_ctl; the verb is the command's name.
type CtlVerbCmd struct {
	Services []string      `arg:"" optional:"" name:"SERVICE" help:"Services to act on (mgmt, keel_mgmt, keel_mgmt.service, storpool_mgmt); default: all of this node's."`
	Batch    bool          `help:"Print nothing but errors (for scripts and automation)."`
	Force    bool          `help:"Stop or restart this node's server even when mgmt says it is not safe or cannot be asked."`
	Timeout  time.Duration `placeholder:"D" help:"How long to wait for each start, stop or restart job (e.g. 30s, 2m); default services.timeout."`
}

// Help is the long help of every keel_ctl verb.
func (c *CtlVerbCmd) Help() string {
	return `Acts on the keel services of this node: every keel_*.service unit file in
systemd's unit paths, plus keel_ROLE.service for each role in node.roles
(a role whose unit is missing is reported as not installed). SERVICE limits
the command to the services named.

keel_ctl talks to systemd over its private D-Bus socket
(/run/systemd/private), as root. start, stop and restart queue one systemd
job per service and wait for its result, at most --timeout per job. Services
start in dependency order (mgmt, server, then client, bridge and iscsi, then
the rest) and stop in reverse. enable and disable change the units'
[Install] links and reload systemd, so that "keel_ctl enable && keel_ctl
start" also brings up services installed since the last run, e.g. the server
of a client-only node that became a converged one.

Safety: stopping or restarting this node's running server first asks mgmt
(GET /ctrl/1.0/NodeStopCheck/<node.id> at mgmt.api_url, token from
mgmt.token_file) whether some data would lose its last up copy. The command
is refused, changing nothing, unless mgmt says it is safe or that the node is
in maintenance; when mgmt cannot be asked it is refused too. --force skips
the check. The reason is printed in one line.

status prints UNIT, STATE (active/sub), ENABLED, PID, UPTIME and LAST EXIT
per service; --json prints the same as objects; --batch prints only the
services that are not running.

Exit status: 0 when every service reached the asked state (for status: is
active), 1 when some did not or the command was refused (each failed service
is named with the last services.journal_lines lines of its journal), 2 for a
wrong invocation.

Examples:
  keel_ctl status
  keel_ctl start
  keel_ctl restart server client --timeout 2m
  keel_ctl stop --force
  keel_ctl enable && keel_ctl start`
}

// The verbs: one type each, so that kong's selected command says the verb.
type (
	CtlStatusCmd  struct{ CtlVerbCmd }
	CtlStartCmd   struct{ CtlVerbCmd }
	CtlStopCmd    struct{ CtlVerbCmd }
	CtlRestartCmd struct{ CtlVerbCmd }
	CtlEnableCmd  struct{ CtlVerbCmd }
	CtlDisableCmd struct{ CtlVerbCmd }
)

// Run shows the status.
func (c *CtlStatusCmd) Run(env *Env) error { return c.run(env, ctl.Status) }

// Run starts the services.
func (c *CtlStartCmd) Run(env *Env) error { return c.run(env, ctl.Start) }

// Run stops the services.
func (c *CtlStopCmd) Run(env *Env) error { return c.run(env, ctl.Stop) }

// Run restarts the services.
func (c *CtlRestartCmd) Run(env *Env) error { return c.run(env, ctl.Restart) }

// Run enables the services.
func (c *CtlEnableCmd) Run(env *Env) error { return c.run(env, ctl.Enable) }

// Run disables the services.
func (c *CtlDisableCmd) Run(env *Env) error { return c.run(env, ctl.Disable) }

func (c *CtlVerbCmd) run(env *Env, verb ctl.Verb) error {
	var named []ctl.Service
	for _, n := range c.Services {
		s, err := ctl.ParseService(n)
		if err != nil {
			return usageError("%v", err)
		}
		named = append(named, s)
	}
	if c.Timeout < 0 {
		return usageError("--timeout %s: must be positive", c.Timeout)
	}
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	sd, err := ctl.Connect(env.Ctx)
	if err != nil {
		return err
	}
	defer sd.Close()
	svcs := named
	if len(svcs) == 0 {
		if svcs, err = ctl.Discover(env.Ctx, sd, cfg.Node.Roles); err != nil {
			return err
		}
	}
	timeout := time.Duration(cfg.Services.Timeout)
	if c.Timeout > 0 {
		timeout = c.Timeout
	}
	ctrl := &ctl.Controller{
		Systemd:      sd,
		Log:          env.Log,
		Timeout:      timeout,
		JournalLines: cfg.Services.JournalLines,
		Journal:      ctl.JournalTail,
		Force:        c.Force,
		StopCheck: func(ctx context.Context) (ctl.StopVerdict, error) {
			tok, err := apiclient.ReadToken(cfg.Mgmt.TokenFile)
			if err != nil {
				return ctl.StopVerdict{}, err
			}
			ctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Services.StopCheckTimeout))
			defer cancel()
			return ctl.AskMgmt(ctx, apiclient.New(cfg.Mgmt.APIURL, tok), cfg.Node.ID)
		},
	}
	outs, err := ctrl.Run(env.Ctx, verb, svcs)
	if err != nil {
		if errors.Is(err, ctl.ErrStopRefused) {
			return &ExitError{Code: 1, Err: err}
		}
		return err
	}
	switch {
	case env.Globals.JSON:
		if err := env.PrintJSON(outs); err != nil {
			return err
		}
	case verb == ctl.Status && !c.Batch:
		if err := ctl.WriteStatus(env.Stdout, outs); err != nil {
			return err
		}
	default:
		ctl.WriteOutcomes(env.Stdout, env.Stderr, outs, c.Batch)
	}
	if ctl.Failed(outs) {
		return &ExitError{Code: 1}
	}
	return nil
}
