// Package iface turns the storage-network section of the configuration,
// the node id and the iSCSI portal groups given to iface-genconf into the
// OS network configuration of this node: ifupdown stanzas, RHEL ifcfg files
// or netplan YAML. It derives each address, validates the whole layout
// (prefixes, VLANs, overlaps), optionally checks it against the interfaces
// netlink shows, and writes only what is missing (or, when told, what
// differs). See DESIGN.md.
package iface

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"keel/node"
)

var (
	// ErrSyntax marks a value that cannot be parsed (an --iscsicfg that is
	// not VLAN,IP/PREFIX[:VLAN,IP/PREFIX...], a VLAN outside 1..4094).
	ErrSyntax = errors.New("syntax error")
	// ErrLayout marks inputs that parse but cannot be laid out: an address
	// outside its network, overlapping networks, a VLAN used twice on one
	// device, more paths than interfaces.
	ErrLayout = errors.New("invalid network layout")
	// ErrHost marks a layout that conflicts with the interfaces of this
	// host: an unknown interface, a VLAN or address already in use.
	ErrHost = errors.New("conflicts with this host")
	// ErrStyle marks an OS configuration style that cannot be detected.
	ErrStyle = errors.New("unknown network configuration style")
	// ErrExists marks files that exist with other content and were not
	// replaced because --overwrite was not given.
	ErrExists = errors.New("files exist with other content")
)

// Mode is how the storage interfaces are used.
type Mode string

// The storage-network modes.
const (
	// ModeExclusive: every interface is on its own storage network.
	ModeExclusive Mode = "exclusive"
	// ModeActiveBackup: the interfaces form an active-backup bond.
	ModeActiveBackup Mode = "active-backup"
	// ModeLACP: the interfaces form an 802.3ad (LACP) bond.
	ModeLACP Mode = "lacp"
)

// StorageNet is the storage network of the node, as configured.
type StorageNet struct {
	Interfaces    []string
	Mode          Mode
	Bond          string // the bond's name in active-backup and lacp modes
	MTU           int
	VLAN          int            // 0: untagged
	Networks      []netip.Prefix // one per interface (exclusive) or one (bond)
	AddressOffset int
}

// StorageFromConfig converts the [storage_net] section. Errors name the key
// and the value.
func StorageFromConfig(c node.StorageNetConfig) (StorageNet, error) {
	s := StorageNet{
		Interfaces:    c.Interfaces,
		Mode:          Mode(c.Mode),
		Bond:          c.Bond,
		MTU:           c.MTU,
		VLAN:          c.VLAN,
		AddressOffset: c.AddressOffset,
	}
	for i, n := range c.Networks {
		p, err := parseNetwork(n)
		if err != nil {
			return StorageNet{}, fmt.Errorf("storage_net.networks[%d]: %w", i, err)
		}
		s.Networks = append(s.Networks, p)
	}
	return s, nil
}

// PortalGroup is one --iscsicfg: a single network, or two or more for
// multipath (one network per path).
type PortalGroup struct {
	Spec     string // as given, for messages
	Networks []ISCSINet
}

// Multipath reports whether the group has one network per path.
func (g PortalGroup) Multipath() bool { return len(g.Networks) > 1 }

// ISCSINet is one network of a portal group: always tagged.
type ISCSINet struct {
	VLAN    int
	Network netip.Prefix
}

// ParseISCSICfg parses VLAN,IP/PREFIX (a single-network portal group) or
// VLAN0,IP0/PREFIX0:VLAN1,IP1/PREFIX1[:...] (multipath). IP is the
// network's base address; VLAN is 1..4094. Errors wrap ErrSyntax and quote
// the offending part.
func ParseISCSICfg(spec string) (PortalGroup, error) {
	g := PortalGroup{Spec: spec}
	if strings.TrimSpace(spec) == "" {
		return g, fmt.Errorf("iscsicfg %q: %w: empty; want VLAN,IP/PREFIX or VLAN0,IP0/PREFIX0:VLAN1,IP1/PREFIX1", spec, ErrSyntax)
	}
	for _, part := range strings.Split(spec, ":") {
		vlanText, netText, ok := strings.Cut(part, ",")
		if !ok {
			return g, fmt.Errorf("iscsicfg %q: %w: %q is not VLAN,IP/PREFIX", spec, ErrSyntax, part)
		}
		vlan, err := strconv.Atoi(vlanText)
		if err != nil {
			return g, fmt.Errorf("iscsicfg %q: %w: VLAN %q is not a number", spec, ErrSyntax, vlanText)
		}
		if vlan < 1 || vlan > 4094 {
			return g, fmt.Errorf("iscsicfg %q: %w: VLAN %d is outside 1..4094", spec, ErrSyntax, vlan)
		}
		p, err := parseNetwork(netText)
		if err != nil {
			return g, fmt.Errorf("iscsicfg %q: %w", spec, err)
		}
		g.Networks = append(g.Networks, ISCSINet{VLAN: vlan, Network: p})
	}
	return g, nil
}

// parseNetwork parses an IPv4 network in CIDR form whose address is the
// network's base (no host bits set).
func parseNetwork(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%w: %q is not a network in CIDR form like 10.1.0.0/24", ErrSyntax, s)
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: %q is not IPv4; only IPv4 storage and iSCSI networks are supported", ErrSyntax, s)
	}
	if p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("%w: %q is too small for a storage or iSCSI network (at most /30)", ErrSyntax, s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%w: %q has host bits set; write its network %s", ErrSyntax, s, m)
	}
	return p, nil
}

// NodeAddress is the address of the node with index n (node id + offset)
// in network p, with p's prefix length. It is an error naming the address
// when it falls outside p or on its network or broadcast address.
func NodeAddress(p netip.Prefix, n int) (netip.Prefix, error) {
	if n < 0 {
		return netip.Prefix{}, fmt.Errorf("%s: %w: negative address index %d", p, ErrLayout, n)
	}
	b := p.Addr().As4()
	v := uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
	v += uint64(n)
	size := uint64(1) << (32 - p.Bits())
	if v > 0xffffffff {
		return netip.Prefix{}, fmt.Errorf("%s: %w: base + %d is past 255.255.255.255", p, ErrLayout, n)
	}
	a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	switch {
	case !p.Contains(a):
		return netip.Prefix{}, fmt.Errorf("%s: %w: address %s (base + %d) is outside the network; the network holds %d addresses", p, ErrLayout, a, n, size-2)
	case uint64(n) == 0:
		return netip.Prefix{}, fmt.Errorf("%s: %w: address %s (base + 0) is the network address; raise the address offset", p, ErrLayout, a)
	case uint64(n) == size-1:
		return netip.Prefix{}, fmt.Errorf("%s: %w: address %s (base + %d) is the broadcast address", p, ErrLayout, a, n)
	}
	return netip.PrefixFrom(a, p.Bits()), nil
}
