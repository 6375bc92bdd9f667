package applets

import (
	"fmt"
	"time"
)

// AttachCmd groups the attach commands.
type AttachCmd struct {
	Volume   AttachVolumeCmd   `cmd:"" help:"Attach a volume to a client, read-write (default) or read-only."`
	Snapshot AttachSnapshotCmd `cmd:"" help:"Attach a snapshot to a client (always read-only)."`
}

// AttachVolumeCmd is `keel attach volume`.
type AttachVolumeCmd struct {
	Name   string        `arg:"" name:"NAME" help:"Volume name or ~globalId."`
	Client []int         `required:"" help:"Client id(s) to attach on." placeholder:"ID"`
	RO     bool          `name:"ro" help:"Attach read-only."`
	Force  bool          `help:"Detach whatever is in the way (another read-write or read-only holder)."`
	Wait   time.Duration `help:"Wait up to this long (like 30s) for the clients to apply the attachment; 0: do not wait." placeholder:"D"`
}

// Help is the long help of `keel attach volume`.
func (c *AttachVolumeCmd) Help() string {
	return `Attaches a volume (VolumesReassign, or VolumesReassignWait with --wait).
A volume has at most one read-write attachment and then no read-only ones on
other clients; --force detaches them. Every read-write attach raises the
volume's fencing token, so a client that lost the attachment can never
write again. Exit status 1 when refused or when --wait runs out.

Examples:
  keel attach volume vm1 --client 3
  keel attach volume vm1 --client 4 --force --wait 30s`
}

// Run attaches.
func (c *AttachVolumeCmd) Run(env *Env) error {
	d := map[string]any{"volume": c.Name, "force": c.Force}
	if c.RO {
		d["ro"] = c.Client
	} else {
		d["rw"] = c.Client
	}
	return reassign(env, d, c.Wait, fmt.Sprintf("volume %s attached to client(s) %v", c.Name, c.Client))
}

func reassign(env *Env, d map[string]any, wait time.Duration, done string) error {
	var err error
	if wait > 0 {
		_, err = apiPost(env, "VolumesReassignWait", map[string]any{"reassign": []any{d}, "attachTimeout": int(wait.Seconds())})
	} else {
		_, err = apiPost(env, "VolumesReassign", []any{d})
	}
	if err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintln(env.Stdout, done)
	return nil
}

// AttachSnapshotCmd is `keel attach snapshot`.
type AttachSnapshotCmd struct {
	Name   string        `arg:"" name:"NAME" help:"Snapshot name or ~globalId."`
	Client []int         `required:"" help:"Client id(s)." placeholder:"ID"`
	Wait   time.Duration `help:"Wait up to this long for the clients to apply it." placeholder:"D"`
}

// Help is the long help of `keel attach snapshot`.
func (c *AttachSnapshotCmd) Help() string {
	return `Attaches a snapshot read-only to clients (VolumesReassign).`
}

// Run attaches.
func (c *AttachSnapshotCmd) Run(env *Env) error {
	return reassign(env, map[string]any{"snapshot": c.Name, "ro": c.Client}, c.Wait, fmt.Sprintf("snapshot %s attached to client(s) %v", c.Name, c.Client))
}

// DetachCmd groups the detach commands.
type DetachCmd struct {
	Volume   DetachVolumeCmd   `cmd:"" help:"Detach a volume from clients."`
	Snapshot DetachSnapshotCmd `cmd:"" help:"Detach a snapshot from clients."`
}

// detachFlags are the options of both detach commands.
type detachFlags struct {
	Name   string `arg:"" name:"NAME" help:"Name or ~globalId."`
	Client []int  `help:"Client id(s) to detach from." placeholder:"ID" xor:"which"`
	All    bool   `help:"Detach from every client." xor:"which"`
	Force  bool   `help:"Detach even when the device is open."`
}

const detachHelp = `Removes attachments (VolumesReassign with detach). Give --client IDs or
--all.

Example:
  keel detach volume vm1 --all`

func (c *detachFlags) run(env *Env, key string) error {
	var detach any = c.Client
	if c.All {
		detach = "all"
	} else if len(c.Client) == 0 {
		return usageError("detach: give --client ID or --all")
	}
	return reassign(env, map[string]any{key: c.Name, "detach": detach, "force": c.Force}, 0, fmt.Sprintf("%s %s detached", key, c.Name))
}

// DetachVolumeCmd is `keel detach volume`.
type DetachVolumeCmd struct{ detachFlags }

// Help is the long help of `keel detach volume`.
func (c *DetachVolumeCmd) Help() string { return detachHelp }

// Run detaches.
func (c *DetachVolumeCmd) Run(env *Env) error { return c.run(env, "volume") }

// DetachSnapshotCmd is `keel detach snapshot`.
type DetachSnapshotCmd struct{ detachFlags }

// Help is the long help of `keel detach snapshot`.
func (c *DetachSnapshotCmd) Help() string { return detachHelp }

// Run detaches.
func (c *DetachSnapshotCmd) Run(env *Env) error { return c.run(env, "snapshot") }
