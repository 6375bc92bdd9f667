package iface

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is the one operation detection needs from a route netlink socket:
// send a request and collect its (multipart) replies. *netlink.Conn
// implements it; tests answer with crafted messages.
type Netlink interface {
	Execute(m netlink.Message) ([]netlink.Message, error)
}

// DialNetlink opens a route netlink socket in the current network
// namespace, or in the one open at netnsFD when it is not 0.
func DialNetlink(netnsFD int) (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("netlink: dial: %w", err)
	}
	return c, nil
}

// Link is one network link of the host, as netlink shows it.
type Link struct {
	Index    int            `json:"index"`
	Name     string         `json:"name"`
	Kind     string         `json:"kind,omitempty"` // rtnetlink kind: "" for plain devices, bond, vlan, bridge, veth, ...
	MTU      int            `json:"mtu"`
	Master   string         `json:"master,omitempty"`    // bond or bridge it belongs to
	Parent   string         `json:"parent,omitempty"`    // a VLAN's raw device
	VLAN     int            `json:"vlan,omitempty"`      // a VLAN's tag
	BondMode string         `json:"bond_mode,omitempty"` // a bond's kernel mode: active-backup, 802.3ad, ...
	Addrs    []netip.Prefix `json:"addresses,omitempty"`
}

// Host is what netlink shows of this host's links.
type Host struct {
	Links []Link `json:"links"`
}

// Link returns the link called name.
func (h *Host) Link(name string) (Link, bool) {
	for _, l := range h.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// Detect dumps the links and addresses of the namespace nl talks to.
func Detect(nl Netlink) (*Host, error) {
	links, err := dump(nl, unix.RTM_GETLINK, &rtnetlink.LinkMessage{})
	if err != nil {
		return nil, fmt.Errorf("detect links: %w", err)
	}
	h := &Host{}
	type rawLink struct {
		Link
		master, parent uint32
	}
	var raws []rawLink
	for _, m := range links {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		var lm rtnetlink.LinkMessage
		if err := lm.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("detect links: decode link message: %w", err)
		}
		if lm.Attributes == nil {
			continue
		}
		a := lm.Attributes
		r := rawLink{Link: Link{Index: int(lm.Index), Name: a.Name, MTU: int(a.MTU)}, parent: a.Type}
		if a.Master != nil {
			r.master = *a.Master
		}
		if a.Info != nil {
			r.Kind = a.Info.Kind
			switch d := a.Info.Data.(type) {
			case *driver.Bond:
				r.BondMode = d.Mode.String()
			case *rtnetlink.LinkData:
				if r.Kind == "vlan" {
					id, err := vlanID(d.Data)
					if err != nil {
						return nil, fmt.Errorf("detect links: %s: %w", a.Name, err)
					}
					r.VLAN = id
				}
			}
		}
		raws = append(raws, r)
	}
	names := map[uint32]string{}
	for _, r := range raws {
		names[uint32(r.Index)] = r.Name
	}
	for _, r := range raws {
		l := r.Link
		if r.master != 0 {
			l.Master = names[r.master]
		}
		if r.Kind == "vlan" && r.parent != 0 {
			l.Parent = names[r.parent]
		}
		h.Links = append(h.Links, l)
	}

	addrs, err := dump(nl, unix.RTM_GETADDR, &rtnetlink.AddressMessage{})
	if err != nil {
		return nil, fmt.Errorf("detect addresses: %w", err)
	}
	for _, m := range addrs {
		if m.Header.Type != unix.RTM_NEWADDR {
			continue
		}
		var am rtnetlink.AddressMessage
		if err := am.UnmarshalBinary(m.Data); err != nil {
			return nil, fmt.Errorf("detect addresses: decode address message: %w", err)
		}
		if am.Attributes == nil {
			continue
		}
		ip := am.Attributes.Local
		if ip == nil {
			ip = am.Attributes.Address
		}
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			continue
		}
		for i := range h.Links {
			if h.Links[i].Index == int(am.Index) {
				h.Links[i].Addrs = append(h.Links[i].Addrs, netip.PrefixFrom(a.Unmap(), int(am.PrefixLength)))
			}
		}
	}
	sort.Slice(h.Links, func(i, j int) bool { return h.Links[i].Index < h.Links[j].Index })
	return h, nil
}

// dump sends an RTM_GET* dump request for every object of the type.
func dump(nl Netlink, typ netlink.HeaderType, req interface{ MarshalBinary() ([]byte, error) }) ([]netlink.Message, error) {
	b, err := req.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return nl.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   b,
	})
}

// vlanID reads IFLA_VLAN_ID from the IFLA_INFO_DATA of a VLAN link.
func vlanID(b []byte) (int, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, fmt.Errorf("decode vlan data: %w", err)
	}
	id := 0
	for ad.Next() {
		if ad.Type() == unix.IFLA_VLAN_ID {
			id = int(ad.Uint16())
		}
	}
	if err := ad.Err(); err != nil {
		return 0, fmt.Errorf("decode vlan data: %w", err)
	}
	if id == 0 {
		return 0, errors.New("vlan link without IFLA_VLAN_ID")
	}
	return id, nil
}

// kernelBondMode is the kernel's name of a bond mode.
func kernelBondMode(m Mode) string {
	if m == ModeLACP {
		return kernelLACP
	}
	return string(ModeActiveBackup)
}

// CheckHost compares a layout with the links of the host and returns the
// first conflict, naming the link and the value:
//   - a storage interface that does not exist, or that belongs to a bond or
//     bridge other than the configured bond;
//   - a link with the name of a generated one but of another kind, bond
//     mode, VLAN tag or raw device;
//   - the same VLAN already on the same raw device under another name (an
//     iSCSI or storage VLAN interface that overlaps an existing one);
//   - an address on any other link inside one of the layout's networks.
func CheckHost(h *Host, ifaces []Iface) error {
	want := map[string]Iface{}
	for _, f := range ifaces {
		want[f.Name] = f
	}
	var names []string
	for _, l := range h.Links {
		names = append(names, l.Name)
	}
	for _, f := range ifaces {
		l, ok := h.Link(f.Name)
		switch f.Kind {
		case KindEthernet:
			if !ok {
				return fmt.Errorf("%s: %w: interface %s does not exist (this host has %s)", f.Source, ErrHost, f.Name, strings.Join(names, ", "))
			}
			if l.Kind == "bond" || l.Kind == "vlan" || l.Kind == "bridge" {
				return fmt.Errorf("%s: %w: %s is a %s, not a physical interface", f.Source, ErrHost, f.Name, l.Kind)
			}
			if l.Master != "" && l.Master != f.Master {
				return fmt.Errorf("%s: %w: %s already belongs to %s; take it out of %s or name another interface", f.Source, ErrHost, f.Name, l.Master, l.Master)
			}
		case KindBond:
			if ok && l.Kind != "bond" {
				return fmt.Errorf("%s: %w: %s exists and is a %s, not a bond", f.Source, ErrHost, f.Name, kindName(l.Kind))
			}
			if ok && l.BondMode != "" && l.BondMode != kernelBondMode(f.BondMode) {
				return fmt.Errorf("%s: %w: bond %s runs in mode %s, but storage_net.mode is %s", f.Source, ErrHost, f.Name, l.BondMode, f.BondMode)
			}
		case KindVLAN:
			if ok && (l.Kind != "vlan" || l.VLAN != f.VLAN || l.Parent != f.Parent) {
				return fmt.Errorf("%s: %w: %s exists as %s, not VLAN %d on %s", f.Source, ErrHost, f.Name, describe(l), f.VLAN, f.Parent)
			}
			for _, a := range l.Addrs {
				if ok && a.Addr().Is4() && f.Address.IsValid() && !f.Address.Masked().Contains(a.Addr()) {
					return fmt.Errorf("%s: %w: %s already carries %s, outside the network %s it would get; VLAN %d on %s is in use by another network",
						f.Source, ErrHost, f.Name, a, f.Address.Masked(), f.VLAN, f.Parent)
				}
			}
			for _, o := range h.Links {
				if o.Kind == "vlan" && o.Parent == f.Parent && o.VLAN == f.VLAN && o.Name != f.Name {
					return fmt.Errorf("%s: %w: VLAN %d on %s already exists as %s", f.Source, ErrHost, f.VLAN, f.Parent, o.Name)
				}
			}
		}
	}
	for _, f := range ifaces {
		if !f.Address.IsValid() {
			continue
		}
		netw := f.Address.Masked()
		for _, l := range h.Links {
			if l.Name == f.Name {
				continue
			}
			for _, a := range l.Addrs {
				if a.Addr().Is4() && a.Overlaps(netw) {
					return fmt.Errorf("%s: %w: network %s overlaps address %s on %s", f.Source, ErrHost, netw, a, l.Name)
				}
			}
		}
	}
	return nil
}

func kindName(k string) string {
	if k == "" {
		return "plain device"
	}
	return k
}

func describe(l Link) string {
	if l.Kind == "vlan" {
		return fmt.Sprintf("VLAN %d on %s", l.VLAN, l.Parent)
	}
	return "a " + kindName(l.Kind)
}
