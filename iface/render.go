package iface

import (
	"fmt"
	"io/fs"
	"strings"
)

// Style is an OS network configuration format.
type Style string

// The styles iface-genconf writes.
const (
	// StyleIfupdown: Debian's ifupdown, one stanza file per link in
	// /etc/network/interfaces.d (sourced by /etc/network/interfaces).
	StyleIfupdown Style = "ifupdown"
	// StyleIfcfg: RHEL network-scripts, /etc/sysconfig/network-scripts/ifcfg-NAME.
	StyleIfcfg Style = "ifcfg"
	// StyleNetplan: netplan YAML, one file per link in /etc/netplan.
	StyleNetplan Style = "netplan"
)

// Styles lists the styles in the order detection prefers them.
var Styles = []Style{StyleNetplan, StyleIfcfg, StyleIfupdown}

// File is one configuration file to write, its path relative to the root
// (no leading slash).
type File struct {
	Path    string      `json:"path"`
	Mode    fs.FileMode `json:"mode"`
	Iface   string      `json:"interface"`
	Content string      `json:"content"`
}

// Bond driver settings shared by the styles. miimon 100 ms detects a dead
// link within a tenth of a second; LACP uses fast LACPDUs and a layer3+4
// hash so that the connections of one initiator spread over the members.
const (
	bondMiimon    = 100
	lacpRate      = "fast"
	lacpHash      = "layer3+4"
	kernelLACP    = "802.3ad"
	header        = "Written by keel iface-genconf: %s.\nChange storage_net in the keel configuration or the --iscsicfg options and\nrerun iface-genconf --overwrite rather than editing this file."
	roleUnderlyer = "storage network (underlying interface)"
)

// Render returns the files of a layout in the given style, one per link,
// in layout order. The output depends only on its input: no dates, no host
// state, so that a second run finds nothing to change.
func Render(style Style, ifaces []Iface) ([]File, error) {
	var out []File
	for _, f := range ifaces {
		var file File
		switch style {
		case StyleIfupdown:
			file = File{Path: "etc/network/interfaces.d/keel-" + strings.ReplaceAll(f.Name, ".", "-"), Mode: 0o644, Content: renderIfupdown(f)}
		case StyleIfcfg:
			file = File{Path: "etc/sysconfig/network-scripts/ifcfg-" + f.Name, Mode: 0o644, Content: renderIfcfg(f)}
		case StyleNetplan:
			// netplan warns about (and future versions refuse) files that
			// others can read.
			file = File{Path: "etc/netplan/60-keel-" + f.Name + ".yaml", Mode: 0o600, Content: renderNetplan(f)}
		default:
			return nil, fmt.Errorf("render: %w: %q (want ifupdown, ifcfg or netplan)", ErrStyle, style)
		}
		file.Iface = f.Name
		out = append(out, file)
	}
	seen := map[string]string{}
	for _, f := range out {
		if other, ok := seen[f.Path]; ok {
			return nil, fmt.Errorf("render: %w: interfaces %s and %s would both be written to %s", ErrLayout, other, f.Iface, f.Path)
		}
		seen[f.Path] = f.Iface
	}
	return out, nil
}

func purpose(f Iface) string {
	switch f.Role {
	case RoleStorage:
		return "storage network"
	case RoleISCSI:
		return "iSCSI portal-group network (" + f.Source + ")"
	}
	if f.Kind == KindBond {
		return "storage network bond"
	}
	return roleUnderlyer
}

func comment(prefix string, f Iface) string {
	var b strings.Builder
	for _, l := range strings.Split(fmt.Sprintf(header, purpose(f)), "\n") {
		b.WriteString(prefix + l + "\n")
	}
	return b.String()
}

func bondOptions(m Mode) (mode string, extra [][2]string) {
	if m == ModeLACP {
		return kernelLACP, [][2]string{{"lacp_rate", lacpRate}, {"xmit_hash_policy", lacpHash}}
	}
	return string(ModeActiveBackup), nil
}

func renderIfupdown(f Iface) string {
	var b strings.Builder
	b.WriteString(comment("# ", f))
	method := "manual"
	if f.Address.IsValid() {
		method = "static"
	}
	fmt.Fprintf(&b, "auto %s\niface %s inet %s\n", f.Name, f.Name, method)
	if f.Address.IsValid() {
		fmt.Fprintf(&b, "\taddress %s\n", f.Address)
	}
	fmt.Fprintf(&b, "\tmtu %d\n", f.MTU)
	switch f.Kind {
	case KindEthernet:
		if f.Master != "" {
			fmt.Fprintf(&b, "\tbond-master %s\n", f.Master)
		}
	case KindBond:
		mode, extra := bondOptions(f.BondMode)
		fmt.Fprintf(&b, "\tbond-slaves %s\n\tbond-mode %s\n\tbond-miimon %d\n", strings.Join(f.Slaves, " "), mode, bondMiimon)
		if f.BondMode == ModeActiveBackup {
			fmt.Fprintf(&b, "\tbond-primary %s\n", f.Slaves[0])
		}
		for _, kv := range extra {
			fmt.Fprintf(&b, "\tbond-%s %s\n", strings.ReplaceAll(kv[0], "_", "-"), kv[1])
		}
	case KindVLAN:
		fmt.Fprintf(&b, "\tvlan-raw-device %s\n", f.Parent)
	}
	return b.String()
}

func renderIfcfg(f Iface) string {
	var b strings.Builder
	b.WriteString(comment("# ", f))
	kv := func(k, v string) { fmt.Fprintf(&b, "%s=%s\n", k, v) }
	kv("DEVICE", f.Name)
	kv("NAME", f.Name)
	switch f.Kind {
	case KindEthernet:
		kv("TYPE", "Ethernet")
	case KindBond:
		kv("TYPE", "Bond")
		kv("BONDING_MASTER", "yes")
		mode, extra := bondOptions(f.BondMode)
		opts := fmt.Sprintf("mode=%s miimon=%d", mode, bondMiimon)
		if f.BondMode == ModeActiveBackup {
			opts += " primary=" + f.Slaves[0]
		}
		for _, e := range extra {
			opts += " " + e[0] + "=" + e[1]
		}
		kv("BONDING_OPTS", `"`+opts+`"`)
	case KindVLAN:
		kv("TYPE", "Vlan")
		kv("VLAN", "yes")
		kv("PHYSDEV", f.Parent)
		kv("VLAN_ID", fmt.Sprint(f.VLAN))
	}
	kv("ONBOOT", "yes")
	kv("BOOTPROTO", "none")
	if f.Master != "" {
		kv("MASTER", f.Master)
		kv("SLAVE", "yes")
	}
	if f.Address.IsValid() {
		kv("IPADDR", f.Address.Addr().String())
		kv("PREFIX", fmt.Sprint(f.Address.Bits()))
	}
	kv("MTU", fmt.Sprint(f.MTU))
	kv("IPV6INIT", "no")
	kv("NM_CONTROLLED", "no")
	return b.String()
}

func renderNetplan(f Iface) string {
	var b strings.Builder
	b.WriteString(comment("# ", f))
	section := map[Kind]string{KindEthernet: "ethernets", KindBond: "bonds", KindVLAN: "vlans"}[f.Kind]
	fmt.Fprintf(&b, "network:\n  version: 2\n  %s:\n    %s:\n", section, f.Name)
	in := "      "
	switch f.Kind {
	case KindBond:
		fmt.Fprintf(&b, "%sinterfaces: [%s]\n", in, strings.Join(f.Slaves, ", "))
		mode, extra := bondOptions(f.BondMode)
		fmt.Fprintf(&b, "%sparameters:\n%s  mode: %s\n%s  mii-monitor-interval: %d\n", in, in, mode, in, bondMiimon)
		if f.BondMode == ModeActiveBackup {
			fmt.Fprintf(&b, "%s  primary: %s\n", in, f.Slaves[0])
		}
		for _, e := range extra {
			fmt.Fprintf(&b, "%s  %s: %s\n", in, map[string]string{"lacp_rate": "lacp-rate", "xmit_hash_policy": "transmit-hash-policy"}[e[0]], e[1])
		}
	case KindVLAN:
		fmt.Fprintf(&b, "%sid: %d\n%slink: %s\n", in, f.VLAN, in, f.Parent)
	}
	fmt.Fprintf(&b, "%smtu: %d\n%sdhcp4: false\n%sdhcp6: false\n%slink-local: []\n", in, f.MTU, in, in, in)
	if f.Address.IsValid() {
		fmt.Fprintf(&b, "%saddresses: [%s]\n", in, f.Address)
	}
	return b.String()
}
