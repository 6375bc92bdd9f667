package iface

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nlenc"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// kernel answers dump requests with crafted messages, as the kernel would:
// it checks that each request is a dump of links or addresses.
type kernel struct {
	links, addrs []netlink.Message
	err          error
	requests     []netlink.HeaderType
}

func (k *kernel) Execute(m netlink.Message) ([]netlink.Message, error) {
	k.requests = append(k.requests, m.Header.Type)
	if m.Header.Flags != netlink.Request|netlink.Dump {
		return nil, errors.New("not a dump request")
	}
	if k.err != nil {
		return nil, k.err
	}
	switch m.Header.Type {
	case unix.RTM_GETLINK:
		return k.links, nil
	case unix.RTM_GETADDR:
		return k.addrs, nil
	}
	return nil, errors.New("unexpected request type")
}

func u32(v uint32) *uint32 { return &v }

func linkMsg(t *testing.T, lm rtnetlink.LinkMessage) netlink.Message {
	t.Helper()
	b, err := lm.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWLINK, Flags: netlink.Multi}, Data: b}
}

func addrMsg(t *testing.T, index uint32, p string) netlink.Message {
	t.Helper()
	pr := netip.MustParsePrefix(p)
	am := rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: uint8(pr.Bits()), Index: index,
		Attributes: &rtnetlink.AddressAttributes{Address: net.IP(pr.Addr().AsSlice()), Local: net.IP(pr.Addr().AsSlice())}}
	b, err := am.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return netlink.Message{Header: netlink.Header{Type: unix.RTM_NEWADDR, Flags: netlink.Multi}, Data: b}
}

func vlanData(id uint16) *rtnetlink.LinkData {
	return &rtnetlink.LinkData{Name: "vlan", Data: nltest.MustMarshalAttributes([]netlink.Attribute{
		{Type: 2, Data: []byte{0, 0, 0, 0, 0, 0, 0, 0}}, // IFLA_VLAN_FLAGS, skipped
		{Type: unix.IFLA_VLAN_ID, Data: nlenc.Uint16Bytes(id)},
	})}
}

// A host with lo, two members of an LACP bond, a VLAN on the bond carrying
// an address, and a bridge with a veth.
func craftedHost(t *testing.T) *kernel {
	return &kernel{
		links: []netlink.Message{
			linkMsg(t, rtnetlink.LinkMessage{Index: 1, Attributes: &rtnetlink.LinkAttributes{Name: "lo", MTU: 65536}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 2, Attributes: &rtnetlink.LinkAttributes{Name: "eth2", MTU: 9000, Master: u32(4)}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 3, Attributes: &rtnetlink.LinkAttributes{Name: "eth3", MTU: 9000, Master: u32(4)}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 4, Attributes: &rtnetlink.LinkAttributes{Name: "bond0", MTU: 9000,
				Info: &rtnetlink.LinkInfo{Kind: "bond", Data: &driver.Bond{Mode: driver.BondMode802_3AD}}}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 5, Attributes: &rtnetlink.LinkAttributes{Name: "bond0.100", MTU: 9000, Type: 4,
				Info: &rtnetlink.LinkInfo{Kind: "vlan", Data: vlanData(100)}}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 6, Attributes: &rtnetlink.LinkAttributes{Name: "br0", MTU: 1500,
				Info: &rtnetlink.LinkInfo{Kind: "bridge"}}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 7, Attributes: &rtnetlink.LinkAttributes{Name: "veth0", MTU: 1500, Master: u32(6), Type: 8,
				Info: &rtnetlink.LinkInfo{Kind: "veth"}}}),
			linkMsg(t, rtnetlink.LinkMessage{Index: 8, Attributes: &rtnetlink.LinkAttributes{Name: "iscsi300", MTU: 9000, Type: 4,
				Info: &rtnetlink.LinkInfo{Kind: "vlan", Data: vlanData(300)}}}),
		},
		addrs: []netlink.Message{
			addrMsg(t, 1, "127.0.0.1/8"),
			addrMsg(t, 5, "10.3.0.5/24"),
			addrMsg(t, 6, "192.168.7.1/24"),
		},
	}
}

func TestDetectCrafted(t *testing.T) {
	k := craftedHost(t)
	h, err := Detect(k)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.requests) != 2 || k.requests[0] != unix.RTM_GETLINK || k.requests[1] != unix.RTM_GETADDR {
		t.Fatalf("requests %v, want a link dump then an address dump", k.requests)
	}
	want := map[string]string{
		"lo":        "kind= master= parent= vlan=0 mode= mtu=65536 addrs=[127.0.0.1/8]",
		"eth2":      "kind= master=bond0 parent= vlan=0 mode= mtu=9000 addrs=[]",
		"eth3":      "kind= master=bond0 parent= vlan=0 mode= mtu=9000 addrs=[]",
		"bond0":     "kind=bond master= parent= vlan=0 mode=802.3ad mtu=9000 addrs=[]",
		"bond0.100": "kind=vlan master= parent=bond0 vlan=100 mode= mtu=9000 addrs=[10.3.0.5/24]",
		"br0":       "kind=bridge master= parent= vlan=0 mode= mtu=1500 addrs=[192.168.7.1/24]",
		"veth0":     "kind=veth master=br0 parent= vlan=0 mode= mtu=1500 addrs=[]",
		"iscsi300":  "kind=vlan master= parent=bond0 vlan=300 mode= mtu=9000 addrs=[]",
	}
	if len(h.Links) != len(want) {
		t.Fatalf("detected %d links, want %d: %+v", len(h.Links), len(want), h.Links)
	}
	for _, l := range h.Links {
		got := describeLink(l)
		if got != want[l.Name] {
			t.Errorf("%s: %s\n want %s", l.Name, got, want[l.Name])
		}
	}
}

func describeLink(l Link) string {
	addrs := make([]string, len(l.Addrs))
	for i, a := range l.Addrs {
		addrs[i] = a.String()
	}
	return "kind=" + l.Kind + " master=" + l.Master + " parent=" + l.Parent + " vlan=" + strconv.Itoa(l.VLAN) +
		" mode=" + l.BondMode + " mtu=" + strconv.Itoa(l.MTU) + " addrs=[" + strings.Join(addrs, " ") + "]"
}

// Broken replies are errors, never a half-read host.
func TestDetectBadMessages(t *testing.T) {
	bad := []struct {
		name string
		k    *kernel
	}{
		{"kernel error", &kernel{err: errors.New("netlink receive: operation not permitted")}},
		{"short link message", &kernel{links: []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWLINK}, Data: []byte{1, 2, 3}}}}},
		{"short address message", &kernel{addrs: []netlink.Message{{Header: netlink.Header{Type: unix.RTM_NEWADDR}, Data: []byte{2, 24}}}}},
		{"vlan without id", &kernel{links: []netlink.Message{linkMsg(t, rtnetlink.LinkMessage{Index: 5, Attributes: &rtnetlink.LinkAttributes{Name: "eth2.7",
			Info: &rtnetlink.LinkInfo{Kind: "vlan", Data: &rtnetlink.LinkData{Name: "vlan", Data: nltest.MustMarshalAttributes([]netlink.Attribute{{Type: 2, Data: make([]byte, 8)}})}}}})}}},
		{"vlan data truncated", &kernel{links: []netlink.Message{linkMsg(t, rtnetlink.LinkMessage{Index: 5, Attributes: &rtnetlink.LinkAttributes{Name: "eth2.7",
			Info: &rtnetlink.LinkInfo{Kind: "vlan", Data: &rtnetlink.LinkData{Name: "vlan", Data: []byte{6, 0, 1}}}}})}}},
	}
	for _, tc := range bad {
		if h, err := Detect(tc.k); err == nil {
			t.Errorf("%s: Detect = %+v, want an error", tc.name, h)
		}
	}
}

func TestCheckHost(t *testing.T) {
	host, err := Detect(craftedHost(t))
	if err != nil {
		t.Fatal(err)
	}
	lacp := StorageNet{Interfaces: []string{"eth2", "eth3"}, Mode: ModeLACP, Bond: "bond0", MTU: 9000, VLAN: 100, Networks: mustPrefixes("10.3.0.0/24")}
	cases := []struct {
		name   string
		s      func(*StorageNet)
		groups []string
		names  string // "" when the layout fits the host
	}{
		{"matches the host", nil, []string{"201,10.1.0.0/24"}, ""},
		{"unknown interface", func(s *StorageNet) { s.Interfaces = []string{"eth2", "eth9"} }, nil, "interface eth9 does not exist (this host has lo, eth2, eth3, bond0, bond0.100, br0, veth0, iscsi300)"},
		{"member of a bridge", func(s *StorageNet) { s.Interfaces = []string{"eth2", "veth0"} }, nil, "veth0 already belongs to br0"},
		{"member of another bond", func(s *StorageNet) { s.Bond = "bond1" }, nil, "eth2 already belongs to bond0"},
		{"interface is a bond", func(s *StorageNet) { s.Mode = ModeExclusive; s.Interfaces = []string{"bond0"}; s.VLAN = 0 }, nil, "bond0 is a bond"},
		{"bond in another mode", func(s *StorageNet) { s.Mode = ModeActiveBackup }, nil, "bond bond0 runs in mode 802.3ad, but storage_net.mode is active-backup"},
		{"bond name taken by a bridge", func(s *StorageNet) { s.Bond = "br0"; s.Interfaces = []string{"eth9"} }, nil, "eth9"},
		{"iscsi vlan overlaps the storage vlan", func(s *StorageNet) { s.VLAN = 0 }, []string{"100,10.1.0.0/24"}, "bond0.100 already carries 10.3.0.5/24, outside the network 10.1.0.0/24"},
		{"vlan exists under another name", nil, []string{"300,10.1.0.0/24"}, "VLAN 300 on bond0 already exists as iscsi300"},
		{"vlan name taken by another vlan", nil, []string{"201,10.1.0.0/24"}, ""},
		{"address in use on another link", nil, []string{"201,192.168.7.0/24"}, "network 192.168.7.0/24 overlaps address 192.168.7.1/24 on br0"},
		{"storage network moved to another vlan", func(s *StorageNet) { s.VLAN = 101 }, nil, "network 10.3.0.0/24 overlaps address 10.3.0.5/24 on bond0.100"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := lacp
			if tc.s != nil {
				tc.s(&s)
			}
			in := Input{NodeID: 5, Storage: s}
			if len(s.Networks) != len(s.Interfaces) && s.Mode == ModeExclusive {
				in.Storage.Networks = mustPrefixes("10.3.0.0/24")
			}
			for _, g := range tc.groups {
				in.PortalGroups = append(in.PortalGroups, mustParseISCSICfg(t, g))
			}
			ifaces, err := Layout(in)
			if err != nil {
				t.Fatal(err)
			}
			err = CheckHost(host, ifaces)
			if tc.names == "" {
				if err != nil {
					t.Fatalf("CheckHost: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrHost) || !strings.Contains(err.Error(), tc.names) {
				t.Fatalf("CheckHost = %v, want ErrHost naming %q", err, tc.names)
			}
		})
	}
}
