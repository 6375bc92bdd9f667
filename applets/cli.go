package applets

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"

	"keel/node"
)

// CLI is the admin command line, the applet the bare name `keel` runs.
type CLI struct {
	Globals

	Version      VersionCmd      `cmd:"" help:"Print the version and commit of this binary."`
	Config       ConfigCmd       `cmd:"" help:"Show the effective configuration or check a file."`
	State        StateCmd        `cmd:"" help:"Inspect the node's state database."`
	Demo         DemoCmd         `cmd:"" help:"Run a real local keel cluster (mgmt, three servers, a client) with an attached volume."`
	InstallLinks InstallLinksCmd `cmd:"" name:"install-links" help:"Create the applet symlinks (keel_ctl, storpool_ctl, iface-genconf, ...) in a directory."`
	Disk         DiskCmd         `cmd:"" help:"Initialise, list and manage the data disks."`

	// The cluster commands talk to the management API (mgmt.api_url).
	Multi    multiFlag         `name:"multi-cluster" short:"M" help:"Use the MultiCluster/ variant of API calls (objects of every sub-cluster)."`
	Cluster  ClusterCmd        `cmd:"" help:"Create, join and inspect the cluster (mgmt Raft group)."`
	Volume   VolumeCmd         `cmd:"" help:"Create, list, describe, update and delete volumes."`
	Snapshot SnapshotCmd       `cmd:"" help:"Create, list, describe, delete and revert to snapshots."`
	Template TemplateCmd       `cmd:"" help:"Manage volume templates (replication, placement, limits)."`
	PG       PlacementGroupCmd `cmd:"" name:"placement-group" aliases:"pg" help:"Manage placement groups of disks."`
	Attach   AttachCmd         `cmd:"" help:"Attach volumes and snapshots to clients."`
	Detach   DetachCmd         `cmd:"" help:"Detach volumes and snapshots from clients."`
	Service  ServiceCmd        `cmd:"" help:"List the cluster's services."`
	Task     TaskCmd           `cmd:"" help:"List recovery and relocation tasks."`
	KV       KVCmd             `cmd:"" name:"kv" help:"Get and set keys of the cluster's small KV store."`
	ISCSI    ISCSICmd          `cmd:"" name:"iscsi" help:"Configure iSCSI (base name, portal groups, portals, targets, initiators, exports) and list sessions."`
}

const cliDescription = `keel administers a keel block storage cluster and runs its applets.

The same binary is every keel program: started as keel_NAME, storpool_NAME,
iface-genconf or disk-tester it runs that applet; "keel NAME ..." does the
same. Run "keel NAME --help" for an applet's own help.

Exit status: 0 on success, 1 when the command failed, 2 for a wrong invocation.`

func runCLI(name string, args []string) int {
	var cli CLI
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") && !hasCommand(&cli, args[0]) {
		fmt.Fprintf(os.Stderr, "keel: %q is neither a command nor an applet\n", args[0])
		newRegistry().WriteList(os.Stderr)
		fmt.Fprintln(os.Stderr, "run 'keel --help' for the commands")
		return 2
	}
	return runApplet("keel", cliDescription, &cli, args)
}

// VersionCmd prints the stamped version.
type VersionCmd struct{}

// Run prints the version.
func (c *VersionCmd) Run(env *Env) error {
	if env.Globals.JSON {
		return env.PrintJSON(map[string]string{"version": node.Version, "commit": node.Commit, "go": runtime.Version()})
	}
	fmt.Fprintf(env.Stdout, "keel %s (commit %s, %s)\n", node.Version, node.Commit, runtime.Version())
	return nil
}

// ConfigCmd groups the configuration commands.
type ConfigCmd struct {
	Show  ConfigShowCmd  `cmd:"" help:"Print every effective configuration key and its value."`
	Check ConfigCheckCmd `cmd:"" help:"Validate configuration files without applying them."`
}

// ConfigShowCmd prints the effective configuration.
type ConfigShowCmd struct {
	Origin bool `help:"Also print where each value came from: default, FILE:LINE or env VAR."`
}

// Help is the long help of `keel config show`.
func (c *ConfigShowCmd) Help() string {
	return `The effective configuration is built, in this order, from the defaults
built into the binary, the file given by --config (default
/etc/keel/keel.toml), the drop-ins keel.d/*.toml beside it in name order, the
[host."<hostname>"] sections of those files, and finally KEEL_* environment
variables (node.id is KEEL_NODE_ID; lists are comma-separated).

Every key of the schema is printed, as TOML-like "key = value" lines; with
--json, as a list of {key, value, origin, help} objects.`
}

// Run prints the configuration.
func (c *ConfigShowCmd) Run(env *Env) error {
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	entries := cfg.Entries()
	if env.Globals.JSON {
		return env.PrintJSON(entries)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	for _, e := range entries {
		line := fmt.Sprintf("%s = %s", e.Key, tomlLiteral(e.Value))
		if c.Origin {
			line += "\t# " + e.Origin
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

// tomlLiteral prints a value the way it would be written in a file.
func tomlLiteral(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("%q", x)
	case []string:
		q := make([]string, len(x))
		for i, s := range x {
			q[i] = fmt.Sprintf("%q", s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	case []int:
		return strings.ReplaceAll(fmt.Sprint(x), " ", ", ")
	default:
		return fmt.Sprint(x)
	}
}

// ConfigCheckCmd validates files.
type ConfigCheckCmd struct {
	Files []string `arg:"" name:"FILE" help:"Configuration files to validate." type:"existingfile"`
}

// Help is the long help of `keel config check`.
func (c *ConfigCheckCmd) Help() string {
	return `Checks each FILE on its own: TOML syntax, unknown keys, value types and
ranges, including every [host."..."] section (not only this host's). The
first problem in each file is printed as FILE:LINE: KEY: PROBLEM. Nothing is
changed. Exit status 0 when every file is valid, 1 otherwise.`
}

// Run checks the files.
func (c *ConfigCheckCmd) Run(env *Env) error {
	bad := 0
	for _, f := range c.Files {
		if err := node.CheckConfigFile(f); err != nil {
			fmt.Fprintln(env.Stderr, err)
			bad++
			continue
		}
		if !env.Globals.JSON {
			fmt.Fprintf(env.Stdout, "%s: ok\n", f)
		}
	}
	if bad > 0 {
		return &ExitError{Code: 1}
	}
	return nil
}

// StateCmd groups the state commands.
type StateCmd struct {
	Info StateInfoCmd `cmd:"" help:"Show the state database's path, schema version and integrity."`
}

// StateInfoCmd shows the state database.
type StateInfoCmd struct{}

// Help is the long help of `keel state info`.
func (c *StateInfoCmd) Help() string {
	return `Opens the node state database under --state-dir (creating and migrating it
if needed), prints its path, schema version and journal mode, and runs
PRAGMA integrity_check. Exit status 1 when the check finds a problem.`
}

// Run prints the state information.
func (c *StateInfoCmd) Run(env *Env) error {
	st, err := env.State()
	if err != nil {
		return err
	}
	info, err := st.Info(env.Ctx)
	if err != nil {
		return err
	}
	if env.Globals.JSON {
		if err := env.PrintJSON(info); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "path\t%s\n", info.Path)
		fmt.Fprintf(tw, "schema version\t%d (latest %d)\n", info.SchemaVersion, info.LatestVersion)
		fmt.Fprintf(tw, "journal mode\t%s\n", info.JournalMode)
		fmt.Fprintf(tw, "size\t%d bytes\n", info.SizeBytes)
		fmt.Fprintf(tw, "integrity\t%s\n", info.Integrity)
		tw.Flush()
	}
	if info.Integrity != "ok" {
		return fmt.Errorf("state %s: integrity check failed: %s", info.Path, info.Integrity)
	}
	return nil
}

// InstallLinksCmd creates the applet symlinks.
type InstallLinksCmd struct {
	Dir    string `arg:"" name:"DIR" help:"Directory to create the links in (created if missing)."`
	Target string `help:"What the links point to; default: 'keel' when the running binary is in DIR, else its absolute path." placeholder:"PATH"`
	Force  bool   `help:"Replace files or links of those names that point elsewhere."`
}

// Help is the long help of `keel install-links`.
func (c *InstallLinksCmd) Help() string {
	return `Creates one symbolic link per name an applet answers to: keel_NAME and
storpool_NAME for every applet, plus the plain names iface-genconf and
disk-tester. A link that already points to the target is left alone; any
other file of that name is an error unless --force is given.`
}

// Run creates the links.
func (c *InstallLinksCmd) Run(env *Env) error {
	target := c.Target
	if target == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("install-links: %w", err)
		}
		exe, _ = filepath.EvalSymlinks(exe)
		target = exe
		if abs, err := filepath.Abs(c.Dir); err == nil {
			if real, err := filepath.EvalSymlinks(abs); err == nil && real == filepath.Dir(exe) {
				target = filepath.Base(exe)
			}
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return fmt.Errorf("install-links: %w", err)
	}
	created, kept := 0, 0
	for _, n := range newRegistry().LinkNames() {
		if n == "keel" {
			continue // the binary itself
		}
		p := filepath.Join(c.Dir, n)
		if cur, err := os.Readlink(p); err == nil && cur == target {
			kept++
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			if !c.Force {
				return fmt.Errorf("install-links: %s exists and is not a link to %s; use --force to replace it", p, target)
			}
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("install-links: %w", err)
			}
		}
		if err := os.Symlink(target, p); err != nil {
			return fmt.Errorf("install-links: %w", err)
		}
		created++
	}
	if !env.Globals.JSON {
		fmt.Fprintf(env.Stdout, "%d links created, %d already in place in %s (-> %s)\n", created, kept, c.Dir, target)
		return nil
	}
	return env.PrintJSON(map[string]any{"dir": c.Dir, "target": target, "created": created, "unchanged": kept})
}
