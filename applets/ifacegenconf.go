package applets

import (
	"fmt"
	"path/filepath"
	"text/tabwriter"

	"keel/iface"
)

// IfaceGenconfCLI is iface-genconf: OS network configuration for the
// storage network and the iSCSI portal-group networks.
type IfaceGenconfCLI struct {
	Globals

	Auto          bool     `short:"a" help:"Detect the configuration style under --root and check the layout against this host's links, bonds, VLANs and addresses (netlink)."`
	Style         string   `enum:",ifupdown,ifcfg,netplan" default:"" placeholder:"STYLE" help:"Write this style: ifupdown, ifcfg or netplan (overrides the detection of --auto)."`
	ISCSICfg      []string `name:"iscsicfg" sep:"none" placeholder:"VLAN,IP/PREFIX[:VLAN,IP/PREFIX...]" help:"An iSCSI portal group: one network, or one per path for multipath. Repeatable."`
	ISCSIIPOffset *int     `name:"iscsi-ip-offset" placeholder:"N" help:"Added to node.id for the addresses in the portal-group networks (default storage_net.iscsi_ip_offset)."`
	Noop          bool     `short:"n" help:"Write nothing; print every file that would be written and what would happen to it."`
	Overwrite     bool     `help:"Replace existing files whose content differs (without it such files make the run fail, writing nothing)."`
	Root          string   `default:"/" type:"path" placeholder:"DIR" help:"Read and write the configuration under DIR instead of / (default /)."`
}

const ifaceGenconfDescription = `iface-genconf writes the OS network configuration of this node's storage
network and of its iSCSI portal-group networks.

INPUTS
  The [storage_net] section of the configuration: interfaces, mode
  (exclusive, active-backup or lacp), bond, mtu, vlan (0 = untagged),
  networks (CIDR: one per interface in exclusive mode, one with a bond),
  address_offset, iscsi_ip_offset; and node.id.
  --iscsicfg VLAN,IP/PREFIX adds a single-network portal group;
  --iscsicfg VLAN0,IP0/PREFIX0:VLAN1,IP1/PREFIX1 a multipath one (one
  network per path). IP/PREFIX is the network (no host bits), VLAN 1..4094.

ADDRESSES
  In every network this node's address is the network's base address +
  node.id + offset: storage_net.address_offset for the storage networks,
  --iscsi-ip-offset (default storage_net.iscsi_ip_offset) for the portal-group
  networks. An address outside its network (or its network or broadcast
  address), a VLAN outside 1..4094, a VLAN used twice on one device and
  networks that overlap are errors naming the value.

LAYOUTS
  exclusive      every interface carries its own storage network (on VLAN
                 interface IF.VLAN when vlan is set); path j of a multipath
                 portal group goes on interface j, a single-network group on
                 the first interface.
  active-backup  the interfaces form bond (mode active-backup, miimon 100,
                 the first interface primary) carrying the storage network;
                 path j of a multipath group goes on interface j (one path
                 per physical port), a single-network group on the bond.
  lacp           the interfaces form an 802.3ad bond (lacp_rate fast,
                 xmit_hash_policy layer3+4); every portal-group network goes
                 on the bond.
  Portal-group networks are VLAN interfaces named DEVICE.VLAN.

FILES (one per interface, under --root)
  ifupdown  /etc/network/interfaces.d/keel-NAME (dots in NAME become '-')
  ifcfg     /etc/sysconfig/network-scripts/ifcfg-NAME
  netplan   /etc/netplan/60-keel-NAME.yaml (mode 0600)
  Missing files are created. A file that exists with the same content is
  left alone; when every file is so, the run says there is nothing to change.
  A file that exists with other content is replaced only with --overwrite;
  without it the run fails and writes nothing. Files are written atomically.
  iface-genconf does not bring interfaces up: run ifup, ifup-style scripts or
  "netplan apply" afterwards.

DETECTION (-a, --auto)
  The style is detected under --root: netplan when etc/netplan/*.yaml exists,
  ifcfg when etc/sysconfig/network-scripts/ exists, ifupdown when
  etc/network/interfaces exists. The links, bonds, VLANs and addresses of
  the current network namespace are read through netlink; the run fails when
  a storage interface does not exist or belongs to another bond or bridge,
  when a bond exists in another mode, when the same VLAN already exists on
  the same device under another name (an iSCSI interface overlapping a
  storage one), or when another link holds an address in one of the
  networks. Without -a, --style is required and the host is not consulted.

OUTPUT
  One line per file: the action (create, unchanged, replace, differs), the
  path and the interface. --noop prints each file's content as well; --json
  prints the whole plan (interfaces, detected links, files with content and
  action).

EXIT STATUS
  0  the files were written, or there was nothing to change (or --noop)
  1  the layout or the host is in conflict, a file differs without
     --overwrite, or a file could not be written; nothing is written
     when the layout or the host is in conflict
  2  wrong invocation: unknown option, bad --iscsicfg syntax or VLAN,
     neither --style nor --auto

EXAMPLES
  iface-genconf -a --noop --iscsicfg 201,10.1.201.0/24
  iface-genconf -a --iscsicfg 201,10.1.201.0/24:202,10.1.202.0/24 --iscsi-ip-offset 100
  iface-genconf --style netplan --root /mnt/image --overwrite`

func runIfaceGenconf(name string, args []string) int {
	var cli IfaceGenconfCLI
	return runApplet(name, ifaceGenconfDescription, &cli, args)
}

// ifaceGenconfReport is the --json output.
type ifaceGenconfReport struct {
	Style    iface.Style         `json:"style"`
	Detected bool                `json:"style_detected"`
	Root     string              `json:"root"`
	NodeID   int                 `json:"node_id"`
	Noop     bool                `json:"noop"`
	Changed  int                 `json:"changed"`
	Ifaces   []iface.Iface       `json:"interfaces"`
	Host     *iface.Host         `json:"host,omitempty"`
	Files    []iface.PlannedFile `json:"files"`
}

// Run computes the layout, checks it, and writes or prints the files.
func (c *IfaceGenconfCLI) Run(env *Env) error {
	if c.Style == "" && !c.Auto {
		return usageError("give --style ifupdown|ifcfg|netplan, or -a to detect it")
	}
	var groups []iface.PortalGroup
	for _, s := range c.ISCSICfg {
		g, err := iface.ParseISCSICfg(s)
		if err != nil {
			return usageError("%w", err)
		}
		groups = append(groups, g)
	}
	if c.ISCSIIPOffset != nil && *c.ISCSIIPOffset < 0 {
		return usageError("--iscsi-ip-offset %d: must not be negative", *c.ISCSIIPOffset)
	}
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	storage, err := iface.StorageFromConfig(cfg.StorageNet)
	if err != nil {
		return err
	}
	in := iface.Input{NodeID: cfg.Node.ID, Storage: storage, PortalGroups: groups, ISCSIOffset: cfg.StorageNet.ISCSIIPOffset}
	if c.ISCSIIPOffset != nil {
		in.ISCSIOffset = *c.ISCSIIPOffset
	}
	ifaces, err := iface.Layout(in)
	if err != nil {
		return err
	}
	rep := ifaceGenconfReport{Style: iface.Style(c.Style), Root: c.Root, NodeID: in.NodeID, Noop: c.Noop, Ifaces: ifaces}
	if c.Auto {
		if rep.Style == "" {
			if rep.Style, err = iface.DetectStyle(c.Root); err != nil {
				return err
			}
			rep.Detected = true
		}
		nl, err := iface.DialNetlink(0)
		if err != nil {
			return err
		}
		host, err := iface.Detect(nl)
		nl.Close()
		if err != nil {
			return err
		}
		rep.Host = host
		if err := iface.CheckHost(host, ifaces); err != nil {
			return err
		}
	}
	files, err := iface.Render(rep.Style, ifaces)
	if err != nil {
		return err
	}
	if rep.Files, err = iface.Plan(c.Root, files, c.Overwrite); err != nil {
		return err
	}
	for _, f := range rep.Files {
		if f.Action == iface.ActionCreate || f.Action == iface.ActionReplace {
			rep.Changed++
		}
	}
	env.Log.Debug("iface-genconf plan", "style", rep.Style, "interfaces", len(ifaces), "files", len(files), "changed", rep.Changed)
	if !c.Noop {
		if err := iface.Apply(c.Root, rep.Files); err != nil {
			return err
		}
	}
	if env.Globals.JSON {
		return env.PrintJSON(rep)
	}
	return c.printPlan(env, rep)
}

func (c *IfaceGenconfCLI) printPlan(env *Env, rep ifaceGenconfReport) error {
	how := "given"
	if rep.Detected {
		how = "detected"
	}
	fmt.Fprintf(env.Stdout, "style %s (%s), root %s, node %d\n", rep.Style, how, rep.Root, rep.NodeID)
	if c.Noop {
		for _, f := range rep.Files {
			fmt.Fprintf(env.Stdout, "\n# %s %s (%s, mode %04o)\n%s", f.Action, filepath.Join(rep.Root, f.Path), f.Iface, f.Mode, f.Content)
		}
		fmt.Fprintln(env.Stdout)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	counts := map[iface.Action]int{}
	for _, f := range rep.Files {
		counts[f.Action]++
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Action, filepath.Join(rep.Root, f.Path), f.Iface)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case rep.Changed == 0 && counts[iface.ActionKeep] == 0:
		fmt.Fprintf(env.Stdout, "nothing to change: all %d files are up to date\n", len(rep.Files))
	case c.Noop:
		fmt.Fprintf(env.Stdout, "would create %d, replace %d; %d unchanged, %d differ (--noop: nothing written)\n",
			counts[iface.ActionCreate], counts[iface.ActionReplace], counts[iface.ActionUnchanged], counts[iface.ActionKeep])
	default:
		fmt.Fprintf(env.Stdout, "created %d, replaced %d, %d unchanged\n", counts[iface.ActionCreate], counts[iface.ActionReplace], counts[iface.ActionUnchanged])
	}
	return nil
}
