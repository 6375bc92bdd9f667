package applets

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"keel/iscsi"
	"keel/mgmt/apiclient"
)

// ISCSICmd groups the iSCSI configuration commands.
type ISCSICmd struct {
	Show        ISCSIShowCmd        `cmd:"" help:"Show the iSCSI configuration: base name, portal groups, targets, initiators and exports."`
	BaseName    ISCSIBaseNameCmd    `cmd:"" name:"base-name" help:"Set the cluster's iSCSI base name (the prefix of target names)."`
	PortalGroup ISCSIPortalGroupCmd `cmd:"" name:"portal-group" help:"Create and delete portal groups and add their networks."`
	Portal      ISCSIPortalCmd      `cmd:"" help:"Create and delete portals (controller, IP and port in a portal group)."`
	Target      ISCSITargetCmd      `cmd:"" help:"Create and delete the target of a volume."`
	Initiator   ISCSIInitiatorCmd   `cmd:"" help:"Create and delete initiators (IQN, CHAP secret, allowed networks)."`
	Export      ISCSIExportCmd      `cmd:"" help:"Export a volume's target to an initiator in a portal group."`
	Unexport    ISCSIUnexportCmd    `cmd:"" help:"Delete an export."`
	Sessions    ISCSISessionsCmd    `cmd:"" help:"List the live sessions the controllers report."`
	Interfaces  ISCSIInterfacesCmd  `cmd:"" help:"List the network interfaces of the controllers' portals."`
	Seen        ISCSISeenCmd        `cmd:"" help:"List the initiator addresses this node's keel_iscsi has seen (node state)."`
}

// iscsiChange posts one or more commands to POST iSCSIConfig and prints
// what was done.
func iscsiChange(env *Env, done string, cmds ...map[string]any) error {
	if _, err := apiPost(env, "iSCSIConfig", map[string]any{"commands": cmds}); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintln(env.Stdout, done)
	return nil
}

func iscsiCmd(name string, arg map[string]any) map[string]any { return map[string]any{name: arg} }

// ISCSIShowCmd is `keel iscsi show`.
type ISCSIShowCmd struct{}

// Help is the long help of `keel iscsi show`.
func (c *ISCSIShowCmd) Help() string {
	return `Shows the iSCSI configuration (iSCSIConfig): the base name, every portal
group with its networks and portals (controller id, IP:port), every target
(volume, the controller serving it), and every initiator with its CHAP
user, allowed networks and exports. With --json prints the API reply.`
}

// Run shows.
func (c *ISCSIShowCmd) Run(env *Env) error {
	var cfg apiclient.ISCSIConfig
	printed, err := apiGet(env, "iSCSIConfig", &cfg)
	if err != nil || printed {
		return err
	}
	d := cfg.ISCSI
	fmt.Fprintf(env.Stdout, "base name: %s\n\n", dash(d.BaseName))
	rows := [][]string{{"PORTAL GROUP", "NETWORKS", "PORTALS (controller ip:port)"}}
	for _, pg := range sortedValues(d.PortalGroups) {
		var nets, portals []string
		for _, n := range pg.Networks {
			nets = append(nets, fmt.Sprintf("%s/%d", n.Address, n.Prefix))
		}
		for _, p := range pg.Portals {
			portals = append(portals, fmt.Sprintf("%d %s:%d", p.Controller, p.IP, p.Port))
		}
		rows = append(rows, []string{pg.Name, dash(strings.Join(nets, ",")), dash(strings.Join(portals, ", "))})
	}
	if err := table(env, rows); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	rows = [][]string{{"TARGET", "VOLUME", "CONTROLLER"}}
	for _, t := range sortedValues(d.Targets) {
		ctl := "-"
		if t.CurrentControllerID != 0 {
			ctl = strconv.Itoa(t.CurrentControllerID)
		}
		rows = append(rows, []string{t.Name, t.Volume, ctl})
	}
	if err := table(env, rows); err != nil {
		return err
	}
	fmt.Fprintln(env.Stdout)
	rows = [][]string{{"INITIATOR", "CHAP USER", "NETWORKS", "EXPORTS (portal group: target)"}}
	for _, in := range sortedValues(d.Initiators) {
		var ex []string
		for _, e := range in.Exports {
			ex = append(ex, e.PortalGroup+": "+e.Target)
		}
		rows = append(rows, []string{in.Name, dash(in.Username), dash(strings.Join(in.Nets, ",")), dash(strings.Join(ex, ", "))})
	}
	return table(env, rows)
}

// sortedValues returns a map's values ordered by their numeric keys.
func sortedValues[T any](m map[string]T) []T {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, _ := strconv.Atoi(keys[i])
		b, _ := strconv.Atoi(keys[j])
		return a < b
	})
	out := make([]T, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// ISCSIBaseNameCmd is `keel iscsi base-name`.
type ISCSIBaseNameCmd struct {
	Name string `arg:"" name:"IQN" help:"Base name, like iqn.2026-01.com.example.storage (a-z 0-9 - . :)."`
}

// Help is the long help of `keel iscsi base-name`.
func (c *ISCSIBaseNameCmd) Help() string {
	return `Sets the cluster's iSCSI base name (setBaseName). A volume's target is
named <base name>:<volume name>. The base name cannot change while targets
exist.`
}

// Run sets.
func (c *ISCSIBaseNameCmd) Run(env *Env) error {
	return iscsiChange(env, "base name set to "+c.Name, iscsiCmd("setBaseName", map[string]any{"name": c.Name}))
}

// ISCSIPortalGroupCmd groups the portal group commands.
type ISCSIPortalGroupCmd struct {
	Create ISCSIPGCreateCmd `cmd:"" help:"Create a portal group (optionally with its networks)."`
	AddNet ISCSIPGAddNetCmd `cmd:"" name:"add-net" help:"Add a network (CIDR) to a portal group."`
	Delete ISCSIPGDeleteCmd `cmd:"" help:"Delete a portal group without exports (its portals go with it)."`
}

// ISCSIPGCreateCmd is `keel iscsi portal-group create`.
type ISCSIPGCreateCmd struct {
	Name string   `arg:"" name:"NAME" help:"Portal group name (letters, digits, _-.:)."`
	Net  []string `name:"net" placeholder:"CIDR" help:"A network the portal group is reached on (repeatable)."`
}

// Help is the long help of `keel iscsi portal-group create`.
func (c *ISCSIPGCreateCmd) Help() string {
	return `Creates a portal group (createPortalGroup, then portalGroupAddNetwork for
each --net, in one change). Its tag in logins and SendTargets is its id.

Example:
  keel iscsi portal-group create pg1 --net 10.1.201.0/24`
}

// Run creates.
func (c *ISCSIPGCreateCmd) Run(env *Env) error {
	cmds := []map[string]any{iscsiCmd("createPortalGroup", map[string]any{"name": c.Name})}
	for _, n := range c.Net {
		cmds = append(cmds, iscsiCmd("portalGroupAddNetwork", map[string]any{"portalGroup": c.Name, "net": n}))
	}
	return iscsiChange(env, "portal group "+c.Name+" created", cmds...)
}

// ISCSIPGAddNetCmd is `keel iscsi portal-group add-net`.
type ISCSIPGAddNetCmd struct {
	Name string `arg:"" name:"NAME" help:"Portal group."`
	Net  string `arg:"" name:"CIDR" help:"Network, like 10.1.201.0/24."`
}

// Run adds.
func (c *ISCSIPGAddNetCmd) Run(env *Env) error {
	return iscsiChange(env, "network "+c.Net+" added to portal group "+c.Name,
		iscsiCmd("portalGroupAddNetwork", map[string]any{"portalGroup": c.Name, "net": c.Net}))
}

// ISCSIPGDeleteCmd is `keel iscsi portal-group delete`.
type ISCSIPGDeleteCmd struct {
	Name string `arg:"" name:"NAME" help:"Portal group."`
}

// Run deletes.
func (c *ISCSIPGDeleteCmd) Run(env *Env) error {
	return iscsiChange(env, "portal group "+c.Name+" deleted", iscsiCmd("deletePortalGroup", map[string]any{"name": c.Name}))
}

// ISCSIPortalCmd groups the portal commands.
type ISCSIPortalCmd struct {
	Create ISCSIPortalCreateCmd `cmd:"" help:"Create a portal: controller ID listens on IP:PORT for the portal group."`
	Delete ISCSIPortalDeleteCmd `cmd:"" help:"Delete a portal."`
}

// ISCSIPortalCreateCmd is `keel iscsi portal create`.
type ISCSIPortalCreateCmd struct {
	PortalGroup string `arg:"" name:"PORTAL-GROUP" help:"Portal group."`
	Controller  int    `required:"" help:"Controller id (the node id of the keel_iscsi that listens)." placeholder:"ID"`
	IP          string `required:"" name:"ip" help:"IP address to listen on." placeholder:"IP"`
	Port        int    `default:"3260" help:"TCP port."`
}

// Help is the long help of `keel iscsi portal create`.
func (c *ISCSIPortalCreateCmd) Help() string {
	return `Creates a portal (createPortal): keel_iscsi with node.id = --controller
listens on --ip:--port for the portal group. The address must exist on that
node (iface-genconf --iscsicfg writes such interfaces).

Example:
  keel iscsi portal create pg1 --controller 3 --ip 10.1.201.3`
}

// Run creates.
func (c *ISCSIPortalCreateCmd) Run(env *Env) error {
	return iscsiChange(env, fmt.Sprintf("portal %s:%d of controller %d created in %s", c.IP, c.Port, c.Controller, c.PortalGroup),
		iscsiCmd("createPortal", map[string]any{"portalGroup": c.PortalGroup, "controller": c.Controller, "ip": c.IP, "port": c.Port}))
}

// ISCSIPortalDeleteCmd is `keel iscsi portal delete`.
type ISCSIPortalDeleteCmd struct {
	IP   string `arg:"" name:"IP" help:"Portal address."`
	Port int    `default:"3260" help:"TCP port."`
}

// Run deletes.
func (c *ISCSIPortalDeleteCmd) Run(env *Env) error {
	return iscsiChange(env, fmt.Sprintf("portal %s:%d deleted", c.IP, c.Port),
		iscsiCmd("deletePortal", map[string]any{"ip": c.IP, "port": c.Port}))
}

// ISCSITargetCmd groups the target commands.
type ISCSITargetCmd struct {
	Create ISCSITargetCreateCmd `cmd:"" help:"Create the target of a volume (<base name>:<volume>)."`
	Delete ISCSITargetDeleteCmd `cmd:"" help:"Delete the target of a volume without exports."`
}

// ISCSITargetCreateCmd is `keel iscsi target create`.
type ISCSITargetCreateCmd struct {
	Volume string `arg:"" name:"VOLUME" help:"Volume name."`
}

// Run creates.
func (c *ISCSITargetCreateCmd) Run(env *Env) error {
	return iscsiChange(env, "target of volume "+c.Volume+" created", iscsiCmd("createTarget", map[string]any{"volumeName": c.Volume}))
}

// ISCSITargetDeleteCmd is `keel iscsi target delete`.
type ISCSITargetDeleteCmd struct {
	Volume string `arg:"" name:"VOLUME" help:"Volume name."`
}

// Run deletes.
func (c *ISCSITargetDeleteCmd) Run(env *Env) error {
	return iscsiChange(env, "target of volume "+c.Volume+" deleted", iscsiCmd("deleteTarget", map[string]any{"volumeName": c.Volume}))
}

// ISCSIInitiatorCmd groups the initiator commands.
type ISCSIInitiatorCmd struct {
	Create ISCSIInitiatorCreateCmd `cmd:"" help:"Define an initiator (IQN, optional CHAP user and secret, networks)."`
	AddNet ISCSIInitiatorAddNetCmd `cmd:"" name:"add-net" help:"Allow an initiator to connect from one more network."`
	Delete ISCSIInitiatorDeleteCmd `cmd:"" help:"Delete an initiator without exports."`
}

// ISCSIInitiatorCreateCmd is `keel iscsi initiator create`.
type ISCSIInitiatorCreateCmd struct {
	Name     string   `arg:"" name:"IQN" help:"The initiator's name (a-z 0-9 - . :)."`
	Username string   `help:"CHAP user the initiator authenticates as (with --secret)." placeholder:"USER"`
	Secret   string   `help:"CHAP secret (12 to 16 characters is what most initiators accept)." placeholder:"SECRET"`
	Net      []string `name:"net" placeholder:"CIDR" help:"A network the initiator may connect from (repeatable; none: any)."`
}

// Help is the long help of `keel iscsi initiator create`.
func (c *ISCSIInitiatorCreateCmd) Help() string {
	return `Defines an initiator (createInitiator, then initiatorAddNetwork for each
--net, in one change). With --username and --secret it must log in with
CHAP; with --net only from those networks.

Example:
  keel iscsi initiator create iqn.1993-08.org.debian:01:host1 --net 10.1.201.0/24`
}

// Run creates.
func (c *ISCSIInitiatorCreateCmd) Run(env *Env) error {
	if (c.Username == "") != (c.Secret == "") {
		return usageError("give --username and --secret together (CHAP) or neither")
	}
	cmds := []map[string]any{iscsiCmd("createInitiator", map[string]any{"name": c.Name, "username": c.Username, "secret": c.Secret})}
	for _, n := range c.Net {
		cmds = append(cmds, iscsiCmd("initiatorAddNetwork", map[string]any{"initiator": c.Name, "net": n}))
	}
	return iscsiChange(env, "initiator "+c.Name+" created", cmds...)
}

// ISCSIInitiatorAddNetCmd is `keel iscsi initiator add-net`.
type ISCSIInitiatorAddNetCmd struct {
	Name string `arg:"" name:"IQN" help:"Initiator."`
	Net  string `arg:"" name:"CIDR" help:"Network, like 10.1.201.0/24 or 10.1.201.7/32."`
}

// Run adds.
func (c *ISCSIInitiatorAddNetCmd) Run(env *Env) error {
	return iscsiChange(env, "initiator "+c.Name+" may connect from "+c.Net,
		iscsiCmd("initiatorAddNetwork", map[string]any{"initiator": c.Name, "net": c.Net}))
}

// ISCSIInitiatorDeleteCmd is `keel iscsi initiator delete`.
type ISCSIInitiatorDeleteCmd struct {
	Name string `arg:"" name:"IQN" help:"Initiator."`
}

// Run deletes.
func (c *ISCSIInitiatorDeleteCmd) Run(env *Env) error {
	return iscsiChange(env, "initiator "+c.Name+" deleted", iscsiCmd("deleteInitiator", map[string]any{"name": c.Name}))
}

// ISCSIExportCmd is `keel iscsi export`.
type ISCSIExportCmd struct {
	Volume      string `arg:"" name:"VOLUME" help:"Volume whose target is exported."`
	Initiator   string `required:"" placeholder:"IQN" help:"Initiator allowed to log in to the target."`
	PortalGroup string `required:"" name:"portal-group" placeholder:"NAME" help:"Portal group the target is reached in."`
}

// Help is the long help of `keel iscsi export`.
func (c *ISCSIExportCmd) Help() string {
	return `Exports a volume's target to an initiator in a portal group (export). The
first export of a target picks the controller that serves it and attaches
the volume read-write to that controller (client 16384+id): it fails while
the volume is attached anywhere else; detach it first.

Example:
  keel iscsi export vm1-disk --initiator iqn.1993-08.org.debian:01:host1 --portal-group pg1`
}

// Run exports.
func (c *ISCSIExportCmd) Run(env *Env) error {
	return iscsiChange(env, fmt.Sprintf("volume %s exported to %s in portal group %s", c.Volume, c.Initiator, c.PortalGroup),
		iscsiCmd("export", map[string]any{"initiator": c.Initiator, "portalGroup": c.PortalGroup, "volumeName": c.Volume}))
}

// ISCSIUnexportCmd is `keel iscsi unexport`.
type ISCSIUnexportCmd struct {
	Volume      string `arg:"" name:"VOLUME" help:"Volume whose export is deleted."`
	Initiator   string `required:"" placeholder:"IQN" help:"Initiator."`
	PortalGroup string `required:"" name:"portal-group" placeholder:"NAME" help:"Portal group."`
}

// Help is the long help of `keel iscsi unexport`.
func (c *ISCSIUnexportCmd) Help() string {
	return `Deletes an export (exportDelete). The initiator's sessions to the target
in that portal group are closed; the last export of a target detaches its
volume from the controller.`
}

// Run deletes the export.
func (c *ISCSIUnexportCmd) Run(env *Env) error {
	return iscsiChange(env, fmt.Sprintf("export of volume %s to %s in portal group %s deleted", c.Volume, c.Initiator, c.PortalGroup),
		iscsiCmd("exportDelete", map[string]any{"initiator": c.Initiator, "portalGroup": c.PortalGroup, "volumeName": c.Volume}))
}

// ISCSISessionsCmd is `keel iscsi sessions`.
type ISCSISessionsCmd struct{}

// Help is the long help of `keel iscsi sessions`.
func (c *ISCSISessionsCmd) Help() string {
	return `Lists the live sessions (iSCSISessionsInfo), one line per connection, as the
controllers last reported them (they report changes every poll). A
controller that is not running shows as down.`
}

// Run lists.
func (c *ISCSISessionsCmd) Run(env *Env) error {
	var si struct {
		Sessions []apiclient.ISCSISessionInfo `json:"sessions"`
	}
	printed, err := apiGet(env, "iSCSISessionsInfo", &si)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"CONTROLLER", "STATUS", "TARGET", "INITIATOR", "ISID", "PORTAL", "FROM", "SINCE"}}
	for _, s := range si.Sessions {
		portal, from, since := "-", "-", "-"
		if s.TCP != nil {
			portal = fmt.Sprintf("%s:%d", s.TCP.PortalIP, s.TCP.PortalPort)
			from = fmt.Sprintf("%s:%d", s.TCP.InitiatorIP, s.TCP.InitiatorPort)
		}
		if s.TimeCreated != 0 {
			since = time.Unix(s.TimeCreated, 0).Format(time.DateTime)
		}
		rows = append(rows, []string{strconv.Itoa(s.ControllerID), s.Status, dash(s.Target), dash(s.Initiator), dash(s.ISID), portal, from, since})
	}
	return table(env, rows)
}

// ISCSIInterfacesCmd is `keel iscsi interfaces`.
type ISCSIInterfacesCmd struct{}

// Help is the long help of `keel iscsi interfaces`.
func (c *ISCSIInterfacesCmd) Help() string {
	return `Lists, per controller, the network interfaces that hold its portal
addresses (iSCSInterfacesInfo): name, state, MAC and the portal's port.`
}

// Run lists.
func (c *ISCSIInterfacesCmd) Run(env *Env) error {
	var ii struct {
		Controllers []struct {
			Status       string                         `json:"status"`
			ControllerID int                            `json:"controllerId"`
			Interfaces   []apiclient.ISCSIInterfaceInfo `json:"interfaces"`
		} `json:"controllers"`
	}
	printed, err := apiGet(env, "iSCSInterfacesInfo", &ii)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"CONTROLLER", "STATUS", "INTERFACE", "STATE", "MAC", "PORT"}}
	for _, c := range ii.Controllers {
		if len(c.Interfaces) == 0 {
			rows = append(rows, []string{strconv.Itoa(c.ControllerID), c.Status, "-", "-", "-", "-"})
		}
		for _, i := range c.Interfaces {
			rows = append(rows, []string{strconv.Itoa(c.ControllerID), c.Status, i.InterfaceName, i.State, dash(i.MAC), strconv.Itoa(i.Port)})
		}
	}
	return table(env, rows)
}

// ISCSISeenCmd is `keel iscsi seen`.
type ISCSISeenCmd struct{}

// Help is the long help of `keel iscsi seen`.
func (c *ISCSISeenCmd) Help() string {
	return `Lists the initiator addresses keel_iscsi on this node has seen log in to a
portal group that exports a target to them, with when they were first and
last seen (refreshed every poll while a session lives). An address is
forgotten when its initiator has no export left in that portal group or is
deleted. Reads the node state (--state-dir), not the API.`
}

// Run lists.
func (c *ISCSISeenCmd) Run(env *Env) error {
	st, err := env.State()
	if err != nil {
		return err
	}
	list, err := iscsi.SeenInitiators(st.DB)
	if err != nil {
		return err
	}
	if env.Globals.JSON {
		return env.PrintJSON(list)
	}
	rows := [][]string{{"INITIATOR", "ADDRESS", "PORTAL GROUP", "FIRST SEEN", "LAST SEEN"}}
	for _, s := range list {
		rows = append(rows, []string{s.Initiator, s.Address, s.PortalGroup,
			time.Unix(s.FirstSeen, 0).Format(time.DateTime), time.Unix(s.LastSeen, 0).Format(time.DateTime)})
	}
	return table(env, rows)
}
