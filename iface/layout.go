package iface

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Kind is what sort of link an Iface is.
type Kind string

// The kinds of links iface-genconf configures.
const (
	KindEthernet Kind = "ethernet"
	KindBond     Kind = "bond"
	KindVLAN     Kind = "vlan"
)

// Role is the network an Iface carries an address in; underlying devices
// (bond members, untagged parents of VLANs) have none.
type Role string

// The roles.
const (
	RoleNone    Role = ""
	RoleStorage Role = "storage"
	RoleISCSI   Role = "iscsi"
)

// Iface is one link of the generated configuration.
type Iface struct {
	Name     string       `json:"name"`
	Kind     Kind         `json:"kind"`
	Role     Role         `json:"role,omitempty"`
	Address  netip.Prefix `json:"address,omitzero"` // invalid when the link carries none
	MTU      int          `json:"mtu"`
	Master   string       `json:"master,omitempty"`    // the bond an ethernet belongs to
	Slaves   []string     `json:"slaves,omitempty"`    // a bond's members
	BondMode Mode         `json:"bond_mode,omitempty"` // a bond's mode
	Parent   string       `json:"parent,omitempty"`    // a VLAN's raw device
	VLAN     int          `json:"vlan,omitempty"`
	Source   string       `json:"source"` // the input that asked for it, for messages
}

// Input is everything a layout is computed from.
type Input struct {
	NodeID       int
	Storage      StorageNet
	PortalGroups []PortalGroup
	ISCSIOffset  int // added to NodeID in the portal-group networks
}

// Layout computes the links of the node: the storage network first
// (members, then bond, then VLAN), then one VLAN interface per portal-group
// network. Underlying devices come before the links stacked on them.
//
// Placement of the portal-group networks:
//   - exclusive interfaces and active-backup bonds: path j of a multipath
//     group goes on storage interface j;
//   - an LACP bond: every path goes on the bond;
//   - a single-network group goes on the bond, or on the first interface
//     in exclusive mode.
func Layout(in Input) ([]Iface, error) {
	s := in.Storage
	if err := checkStorage(s); err != nil {
		return nil, err
	}
	if in.NodeID < 0 {
		return nil, fmt.Errorf("node.id %d: %w: must not be negative", in.NodeID, ErrLayout)
	}
	var out []Iface
	byName := map[string]int{}
	add := func(f Iface) error {
		if i, ok := byName[f.Name]; ok {
			return fmt.Errorf("%s: %w: %s and %s both need interface %s (the same VLAN on the same device)", f.Source, ErrLayout, out[i].Source, f.Source, f.Name)
		}
		byName[f.Name] = len(out)
		out = append(out, f)
		return nil
	}
	storageOn := func(dev, src string, p netip.Prefix) error {
		addr, err := NodeAddress(p, in.NodeID+s.AddressOffset)
		if err != nil {
			return fmt.Errorf("%s (node.id %d + address_offset %d): %w", src, in.NodeID, s.AddressOffset, err)
		}
		if s.VLAN == 0 {
			for i := range out {
				if out[i].Name == dev {
					out[i].Role, out[i].Address, out[i].Source = RoleStorage, addr, src
				}
			}
			return nil
		}
		return add(Iface{Name: vlanName(dev, s.VLAN), Kind: KindVLAN, Role: RoleStorage, Address: addr,
			MTU: s.MTU, Parent: dev, VLAN: s.VLAN, Source: src})
	}

	bonded := s.Mode != ModeExclusive
	for _, name := range s.Interfaces {
		f := Iface{Name: name, Kind: KindEthernet, MTU: s.MTU, Source: "storage_net.interfaces"}
		if bonded {
			f.Master = s.Bond
		}
		if err := add(f); err != nil {
			return nil, err
		}
	}
	if bonded {
		if err := add(Iface{Name: s.Bond, Kind: KindBond, MTU: s.MTU, Slaves: s.Interfaces, BondMode: s.Mode, Source: "storage_net.bond"}); err != nil {
			return nil, err
		}
		if err := storageOn(s.Bond, "storage_net.networks "+s.Networks[0].String(), s.Networks[0]); err != nil {
			return nil, err
		}
	} else {
		for i, name := range s.Interfaces {
			if err := storageOn(name, "storage_net.networks "+s.Networks[i].String(), s.Networks[i]); err != nil {
				return nil, err
			}
		}
	}

	for _, g := range in.PortalGroups {
		if g.Multipath() && s.Mode != ModeLACP && len(g.Networks) > len(s.Interfaces) {
			return nil, fmt.Errorf("iscsicfg %q: %w: %d paths but only %d storage interfaces (%s) to put them on",
				g.Spec, ErrLayout, len(g.Networks), len(s.Interfaces), strings.Join(s.Interfaces, ", "))
		}
		for j, n := range g.Networks {
			dev := s.Interfaces[0]
			switch {
			case s.Mode == ModeLACP || (!g.Multipath() && bonded):
				dev = s.Bond
			case g.Multipath():
				dev = s.Interfaces[j]
			}
			src := fmt.Sprintf("iscsicfg %q", g.Spec)
			addr, err := NodeAddress(n.Network, in.NodeID+in.ISCSIOffset)
			if err != nil {
				return nil, fmt.Errorf("%s (node.id %d + iscsi-ip-offset %d): %w", src, in.NodeID, in.ISCSIOffset, err)
			}
			if err := add(Iface{Name: vlanName(dev, n.VLAN), Kind: KindVLAN, Role: RoleISCSI, Address: addr,
				MTU: s.MTU, Parent: dev, VLAN: n.VLAN, Source: src}); err != nil {
				return nil, err
			}
		}
	}
	// A tag used on a bond and on one of its members would make the member
	// and the bond claim the same frames.
	for _, a := range out {
		for _, b := range out {
			if a.Kind == KindVLAN && b.Kind == KindVLAN && a.VLAN == b.VLAN && bonded && a.Parent == s.Bond && b.Parent != s.Bond {
				return nil, fmt.Errorf("%s: %w: VLAN %d is on bond %s (%s) and on its member %s", b.Source, ErrLayout, a.VLAN, s.Bond, a.Source, b.Parent)
			}
		}
	}
	if err := checkOverlaps(in); err != nil {
		return nil, err
	}
	for _, f := range out {
		if err := checkIfName(f.Name, f.Source); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func vlanName(dev string, vlan int) string { return dev + "." + strconv.Itoa(vlan) }

func checkStorage(s StorageNet) error {
	if len(s.Interfaces) == 0 {
		return fmt.Errorf("storage_net.interfaces: %w: empty; list the storage interfaces in the configuration", ErrLayout)
	}
	seen := map[string]bool{}
	for _, n := range s.Interfaces {
		if err := checkIfName(n, "storage_net.interfaces"); err != nil {
			return err
		}
		if seen[n] {
			return fmt.Errorf("storage_net.interfaces: %w: %s is listed twice", ErrLayout, n)
		}
		seen[n] = true
	}
	if s.VLAN < 0 || s.VLAN > 4094 {
		return fmt.Errorf("storage_net.vlan: %w: %d is outside 1..4094 (0 for untagged)", ErrLayout, s.VLAN)
	}
	if s.MTU < 576 || s.MTU > 9216 {
		return fmt.Errorf("storage_net.mtu: %w: %d is outside 576..9216", ErrLayout, s.MTU)
	}
	switch s.Mode {
	case ModeExclusive:
		if len(s.Networks) != len(s.Interfaces) {
			return fmt.Errorf("storage_net.networks: %w: exclusive mode needs one network per interface: %d interfaces (%s), %d networks",
				ErrLayout, len(s.Interfaces), strings.Join(s.Interfaces, ", "), len(s.Networks))
		}
	case ModeActiveBackup, ModeLACP:
		if len(s.Networks) != 1 {
			return fmt.Errorf("storage_net.networks: %w: mode %s (one bond) needs exactly one network, not %d", ErrLayout, s.Mode, len(s.Networks))
		}
		if err := checkIfName(s.Bond, "storage_net.bond"); err != nil {
			return err
		}
		if seen[s.Bond] {
			return fmt.Errorf("storage_net.bond: %w: %s is also one of the storage interfaces", ErrLayout, s.Bond)
		}
	default:
		return fmt.Errorf("storage_net.mode: %w: %q is not exclusive, active-backup or lacp", ErrLayout, s.Mode)
	}
	return nil
}

// checkIfName enforces the kernel's rules for interface names (at most 15
// bytes, no '/', ':' or white space) so no generated file names a link the
// kernel would refuse.
func checkIfName(name, src string) error {
	if name == "" || name == "." || name == ".." || len(name) > 15 || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("%s: %w: %q is not a valid interface name (1..15 characters, no '/', ':' or spaces)", src, ErrLayout, name)
	}
	return nil
}

// checkOverlaps refuses any two networks of the input that share addresses.
func checkOverlaps(in Input) error {
	type named struct {
		what string
		p    netip.Prefix
	}
	var nets []named
	for _, p := range in.Storage.Networks {
		nets = append(nets, named{"storage_net.networks " + p.String(), p})
	}
	for _, g := range in.PortalGroups {
		for _, n := range g.Networks {
			nets = append(nets, named{fmt.Sprintf("iscsicfg %q network %s", g.Spec, n.Network), n.Network})
		}
	}
	for i := range nets {
		for j := i + 1; j < len(nets); j++ {
			if nets[i].p.Overlaps(nets[j].p) {
				return fmt.Errorf("%s: %w: overlaps %s", nets[j].what, ErrLayout, nets[i].what)
			}
		}
	}
	return nil
}
