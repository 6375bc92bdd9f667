package iface

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"keel/node"
)

func TestParseISCSICfg(t *testing.T) {
	ok := []struct {
		spec string
		want []ISCSINet
	}{
		{"201,10.1.201.0/24", []ISCSINet{{201, netip.MustParsePrefix("10.1.201.0/24")}}},
		{"1,10.0.0.0/8:4094,192.168.4.0/22", []ISCSINet{{1, netip.MustParsePrefix("10.0.0.0/8")}, {4094, netip.MustParsePrefix("192.168.4.0/22")}}},
	}
	for _, tc := range ok {
		g, err := ParseISCSICfg(tc.spec)
		if err != nil {
			t.Fatalf("%q: %v", tc.spec, err)
		}
		if len(g.Networks) != len(tc.want) || g.Multipath() != (len(tc.want) > 1) {
			t.Fatalf("%q: got %+v", tc.spec, g)
		}
		for i := range tc.want {
			if g.Networks[i] != tc.want[i] {
				t.Errorf("%q: network %d = %+v, want %+v", tc.spec, i, g.Networks[i], tc.want[i])
			}
		}
	}
	bad := []struct{ spec, names string }{
		{"", "empty"},
		{"201", `"201"`},
		{"x,10.1.0.0/24", `"x"`},
		{"0,10.1.0.0/24", "VLAN 0"},
		{"4095,10.1.0.0/24", "VLAN 4095"},
		{"-1,10.1.0.0/24", "VLAN -1"},
		{"201,10.1.0.0", `"10.1.0.0"`},
		{"201,10.1.0.5/24", "host bits"},
		{"201,10.1.0.0/33", `"10.1.0.0/33"`},
		{"201,10.1.0.0/31", "too small"},
		{"201,fd00::/64", `"fd00"`}, // the path separator splits IPv6
		{"201,10.1.0.0/24:", `""`},
		{"201,10.1.0.0/24:202", `"202"`},
	}
	for _, tc := range bad {
		_, err := ParseISCSICfg(tc.spec)
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("%q: err = %v, want ErrSyntax", tc.spec, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.names) {
			t.Errorf("%q: error %q does not name %s", tc.spec, err, tc.names)
		}
	}
}

// The parser of --iscsicfg takes operator input: it must never panic, and
// whatever it accepts must be a valid group.
func FuzzParseISCSICfg(f *testing.F) {
	for _, s := range []string{"201,10.1.201.0/24", "201,10.1.201.0/24:202,10.1.202.0/24", "", ":", ",", "0,0.0.0.0/0", "4094,255.255.255.252/30", "1,::/0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		g, err := ParseISCSICfg(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("%q: error without ErrSyntax: %v", s, err)
			}
			return
		}
		if len(g.Networks) == 0 || len(g.Networks) != strings.Count(s, ":")+1 {
			t.Fatalf("%q: accepted with %d networks", s, len(g.Networks))
		}
		for _, n := range g.Networks {
			if n.VLAN < 1 || n.VLAN > 4094 || !n.Network.Addr().Is4() || n.Network.Masked() != n.Network || n.Network.Bits() > 30 {
				t.Fatalf("%q: accepted bad network %+v", s, n)
			}
			if _, err := NodeAddress(n.Network, 1); err != nil {
				t.Fatalf("%q: accepted network has no address 1: %v", s, err)
			}
		}
	})
}

func TestNodeAddress(t *testing.T) {
	cases := []struct {
		net  string
		n    int
		want string // "" when an error is expected
	}{
		{"10.3.0.0/24", 5, "10.3.0.5/24"},
		{"10.3.0.0/24", 254, "10.3.0.254/24"},
		{"10.3.0.0/24", 255, ""}, // broadcast
		{"10.3.0.0/24", 256, ""}, // outside
		{"10.3.0.0/24", 0, ""},   // network address
		{"10.3.0.0/16", 300, "10.3.1.44/16"},
		{"10.3.0.0/30", 2, "10.3.0.2/30"},
		{"10.3.0.0/30", 3, ""},
		{"255.255.255.0/24", 1 << 20, ""},
		{"10.3.0.0/24", -1, ""},
	}
	for _, tc := range cases {
		got, err := NodeAddress(netip.MustParsePrefix(tc.net), tc.n)
		if tc.want == "" {
			if !errors.Is(err, ErrLayout) {
				t.Errorf("%s + %d: got %v, %v; want ErrLayout", tc.net, tc.n, got, err)
			} else if !strings.Contains(err.Error(), tc.net) {
				t.Errorf("%s + %d: error %q does not name the network", tc.net, tc.n, err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("%s + %d = %v, %v; want %s", tc.net, tc.n, got, err, tc.want)
		}
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// Every class of layout error, each naming the value at fault.
func TestLayoutErrors(t *testing.T) {
	bond := StorageNet{Interfaces: []string{"eth2", "eth3"}, Mode: ModeActiveBackup, Bond: "bond0", MTU: 9000, Networks: mustPrefixes("10.3.0.0/24")}
	excl := StorageNet{Interfaces: []string{"eth2", "eth3"}, Mode: ModeExclusive, MTU: 9000, Networks: mustPrefixes("10.3.0.0/24", "10.3.1.0/24")}
	with := func(s StorageNet, f func(*StorageNet)) StorageNet {
		s.Interfaces = append([]string(nil), s.Interfaces...)
		f(&s)
		return s
	}
	cases := []struct {
		name   string
		in     Input
		groups []string
		names  string
	}{
		{"no interfaces", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Interfaces = nil })}, nil, "storage_net.interfaces"},
		{"interface twice", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Interfaces = []string{"eth2", "eth2"} })}, nil, "eth2 is listed twice"},
		{"bad interface name", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Interfaces = []string{"eth/2"} })}, nil, `"eth/2"`},
		{"long interface name", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Interfaces = []string{"abcdefghijklmnop"} })}, nil, "abcdefghijklmnop"},
		{"vlan name too long", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Bond = "abcdefghijklmn"; s.VLAN = 100 })}, nil, "abcdefghijklmn.100"},
		{"bad mode", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Mode = "roundrobin" })}, nil, `"roundrobin"`},
		{"storage vlan", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.VLAN = 4095 })}, nil, "4095"},
		{"mtu", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.MTU = 100 })}, nil, "storage_net.mtu: "},
		{"bond with two networks", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Networks = mustPrefixes("10.3.0.0/24", "10.4.0.0/24") })}, nil, "exactly one network"},
		{"exclusive without a network per interface", Input{NodeID: 1, Storage: with(excl, func(s *StorageNet) { s.Networks = s.Networks[:1] })}, nil, "2 interfaces (eth2, eth3), 1 networks"},
		{"bond named like a member", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.Bond = "eth3" })}, nil, "eth3"},
		{"storage address outside", Input{NodeID: 60, Storage: with(bond, func(s *StorageNet) { s.AddressOffset = 200 })}, nil, "10.3.1.4"},
		{"storage network address", Input{NodeID: 0, Storage: bond}, nil, "10.3.0.0 (base + 0) is the network address"},
		{"iscsi address outside", Input{NodeID: 60, Storage: bond, ISCSIOffset: 195}, []string{"201,10.1.201.0/24"}, "10.1.201.255"},
		{"storage networks overlap", Input{NodeID: 1, Storage: with(excl, func(s *StorageNet) { s.Networks = mustPrefixes("10.3.0.0/16", "10.3.1.0/24") })}, nil, "10.3.1.0/24: invalid network layout: overlaps storage_net.networks 10.3.0.0/16"},
		{"iscsi overlaps storage", Input{NodeID: 1, Storage: bond}, []string{"201,10.3.0.0/25"}, "10.3.0.0/25"},
		{"iscsi groups overlap", Input{NodeID: 1, Storage: bond}, []string{"201,10.1.0.0/24", "202,10.1.0.0/23"}, "10.1.0.0/23"},
		{"iscsi vlan is the storage vlan", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.VLAN = 201 })}, []string{"201,10.1.0.0/24"}, "bond0.201"},
		{"same vlan twice on one device", Input{NodeID: 1, Storage: bond}, []string{"201,10.1.0.0/24", "201,10.2.0.0/24"}, "bond0.201"},
		{"vlan on bond and member", Input{NodeID: 1, Storage: with(bond, func(s *StorageNet) { s.VLAN = 201 })}, []string{"201,10.1.0.0/24:202,10.2.0.0/24"}, "VLAN 201 is on bond bond0"},
		{"more paths than interfaces", Input{NodeID: 1, Storage: excl}, []string{"201,10.1.0.0/24:202,10.2.0.0/24:203,10.4.0.0/24"}, "3 paths but only 2 storage interfaces"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			for _, g := range tc.groups {
				in.PortalGroups = append(in.PortalGroups, mustParseISCSICfg(t, g))
			}
			got, err := Layout(in)
			if !errors.Is(err, ErrLayout) {
				t.Fatalf("Layout = %+v, %v; want ErrLayout", got, err)
			}
			if !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("error %q does not contain %q", err, tc.names)
			}
		})
	}
}

// The placement rules of the portal-group networks, layout by layout.
func TestLayoutPlacement(t *testing.T) {
	cases := []struct {
		mode  Mode
		group string
		want  []string // NAME@PARENT ADDRESS of the iSCSI links
	}{
		{ModeExclusive, "201,10.1.0.0/24", []string{"eth2.201@eth2 10.1.0.7/24"}},
		{ModeExclusive, "201,10.1.0.0/24:202,10.2.0.0/24", []string{"eth2.201@eth2 10.1.0.7/24", "eth3.202@eth3 10.2.0.7/24"}},
		{ModeActiveBackup, "201,10.1.0.0/24", []string{"bond0.201@bond0 10.1.0.7/24"}},
		{ModeActiveBackup, "201,10.1.0.0/24:202,10.2.0.0/24", []string{"eth2.201@eth2 10.1.0.7/24", "eth3.202@eth3 10.2.0.7/24"}},
		{ModeLACP, "201,10.1.0.0/24", []string{"bond0.201@bond0 10.1.0.7/24"}},
		{ModeLACP, "201,10.1.0.0/24:202,10.2.0.0/24", []string{"bond0.201@bond0 10.1.0.7/24", "bond0.202@bond0 10.2.0.7/24"}},
	}
	for _, tc := range cases {
		s := StorageNet{Interfaces: []string{"eth2", "eth3"}, Mode: tc.mode, Bond: "bond0", MTU: 9000, Networks: mustPrefixes("10.3.0.0/24")}
		if tc.mode == ModeExclusive {
			s.Networks = mustPrefixes("10.3.0.0/24", "10.3.1.0/24")
		}
		ifaces, err := Layout(Input{NodeID: 7, Storage: s, PortalGroups: []PortalGroup{mustParseISCSICfg(t, tc.group)}})
		if err != nil {
			t.Fatalf("%s %s: %v", tc.mode, tc.group, err)
		}
		var got []string
		for _, f := range ifaces {
			if f.Role == RoleISCSI {
				got = append(got, f.Name+"@"+f.Parent+" "+f.Address.String())
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s %s: iSCSI links %v, want %v", tc.mode, tc.group, got, tc.want)
		}
	}
}

func TestStorageFromConfig(t *testing.T) {
	c := node.StorageNetConfig{Interfaces: []string{"eth2"}, Mode: "lacp", Bond: "bond0", MTU: 9000, Networks: []string{"10.3.0.0/24"}, AddressOffset: 3}
	s, err := StorageFromConfig(c)
	if err != nil || s.Mode != ModeLACP || s.Networks[0] != netip.MustParsePrefix("10.3.0.0/24") || s.AddressOffset != 3 {
		t.Fatalf("StorageFromConfig = %+v, %v", s, err)
	}
	for bad, names := range map[string]string{"10.3.0.0": `networks[0]: syntax error: "10.3.0.0"`, "fd00::/64": "not IPv4", "10.3.0.1/24": "10.3.0.0/24"} {
		c.Networks = []string{bad}
		if _, err := StorageFromConfig(c); !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), names) {
			t.Errorf("networks %q: err = %v, want ErrSyntax naming %s", bad, err, names)
		}
	}
}
