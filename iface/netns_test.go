package iface

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
)

// testNetns creates a network namespace that is deleted when the test ends.
func testNetns(t *testing.T) string {
	t.Helper()
	testbin.NeedRoot(t)
	ip := testbin.NeedTool(t, "ip")
	name := fmt.Sprintf("keel-iface-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// inNetns runs ip -n NS ARGS.
func inNetns(t *testing.T, ns string, args ...string) error {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
	return nil
}

func mustInNetns(t *testing.T, ns string, args ...string) {
	t.Helper()
	if err := inNetns(t, ns, args...); err != nil {
		t.Fatal(err)
	}
}

// Detection against real links in a namespace of the test's own: veth
// pairs, a bridge with a member and addresses, and a bond and a VLAN where
// the kernel has those drivers. Then the built binary, run inside the
// namespace, accepts a layout on free interfaces and refuses the conflicts
// naming them.
func TestDetectNetns(t *testing.T) {
	ns := testNetns(t)
	mustInNetns(t, ns, "link", "add", "sA0", "type", "veth", "peer", "name", "sA1")
	mustInNetns(t, ns, "link", "add", "sB0", "type", "veth", "peer", "name", "sB1")
	mustInNetns(t, ns, "link", "set", "sA0", "mtu", "9000")
	mustInNetns(t, ns, "link", "add", "br0", "type", "bridge")
	mustInNetns(t, ns, "link", "set", "sB1", "master", "br0")
	mustInNetns(t, ns, "addr", "add", "192.168.77.1/24", "dev", "br0")
	mustInNetns(t, ns, "addr", "add", "10.3.9.5/24", "dev", "sB0")
	bond := inNetns(t, ns, "link", "add", "bond7", "type", "bond", "mode", "802.3ad") == nil
	if bond {
		mustInNetns(t, ns, "link", "add", "sC0", "type", "veth", "peer", "name", "sC1")
		mustInNetns(t, ns, "link", "set", "sC0", "master", "bond7")
	} else {
		t.Log("this kernel has no bonding driver: bond detection is covered by the crafted messages only")
	}
	vlan := inNetns(t, ns, "link", "add", "link", "sA1", "name", "vl300", "type", "vlan", "id", "300") == nil
	if !vlan {
		t.Log("this kernel has no 802.1q driver: VLAN detection is covered by the crafted messages only")
	}

	f, err := os.Open(filepath.Join("/run/netns", ns))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nl, err := DialNetlink(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	host, err := Detect(nl)
	nl.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"lo":  "kind= master= parent= vlan=0 mode= mtu=65536 addrs=[]",
		"sA0": "kind=veth master= parent= vlan=0 mode= mtu=9000 addrs=[]",
		"sA1": "kind=veth master= parent= vlan=0 mode= mtu=1500 addrs=[]",
		"sB0": "kind=veth master= parent= vlan=0 mode= mtu=1500 addrs=[10.3.9.5/24]",
		"sB1": "kind=veth master=br0 parent= vlan=0 mode= mtu=1500 addrs=[]",
		"br0": "kind=bridge master= parent= vlan=0 mode= mtu=1500 addrs=[192.168.77.1/24]",
	}
	if bond {
		want["bond7"] = "kind=bond master= parent= vlan=0 mode=802.3ad mtu=1500 addrs=[]"
		want["sC0"] = "kind=veth master=bond7 parent= vlan=0 mode= mtu=1500 addrs=[]"
		want["sC1"] = "kind=veth master= parent= vlan=0 mode= mtu=1500 addrs=[]"
	}
	if vlan {
		want["vl300"] = "kind=vlan master= parent=sA1 vlan=300 mode= mtu=1500 addrs=[]"
	}
	for _, l := range host.Links {
		if _, ok := want[l.Name]; !ok {
			t.Errorf("unexpected link %s: %s", l.Name, describeLink(l))
			continue
		}
		if got := describeLink(l); got != want[l.Name] {
			t.Errorf("%s: %s\n want %s", l.Name, got, want[l.Name])
		}
		delete(want, l.Name)
	}
	for n := range want {
		t.Errorf("link %s not detected", n)
	}

	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/netplan"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/netplan/01-netcfg.yaml"), []byte("network: {version: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := func(ifaces, mode, networks string) string {
		return fmt.Sprintf("[node]\nid = 3\n[storage_net]\ninterfaces = [%s]\nmode = %q\nbond = \"bond7\"\nnetworks = [%s]\n", ifaces, mode, networks)
	}
	free := cfg(`"sA0", "sA1"`, "exclusive", `"10.3.0.0/24", "10.3.1.0/24"`)
	runGenconf(t, ns, free, "-a", "--root", t.TempDir()).want(1, "none of etc/netplan/*.yaml")
	runGenconf(t, ns, free, "-a", "--root", root, "--iscsicfg", "201,10.1.0.0/24:202,10.2.0.0/24").want(0, "style netplan (detected)")
	if got := len(filesUnder(t, root)); got != 5 {
		t.Fatalf("%d files under root, want the 4 written and the one there before", got)
	}
	runGenconf(t, ns, free, "-a", "--root", root, "--iscsicfg", "201,10.1.0.0/24:202,10.2.0.0/24").want(0, "nothing to change")

	conflicts := []struct {
		name, cfg string
		args      []string
		msg       string
	}{
		{"unknown interface", cfg(`"sA0", "eth9"`, "exclusive", `"10.3.0.0/24", "10.3.1.0/24"`), nil, "interface eth9 does not exist"},
		{"bridge member", cfg(`"sA0", "sB1"`, "exclusive", `"10.3.0.0/24", "10.3.1.0/24"`), nil, "sB1 already belongs to br0"},
		{"storage network on another link", cfg(`"sA0", "sA1"`, "exclusive", `"10.3.0.0/24", "10.3.8.0/21"`), nil, "network 10.3.8.0/21 overlaps address 10.3.9.5/24 on sB0"},
		{"iscsi network on another link", free, []string{"--iscsicfg", "201,192.168.77.0/24"}, "network 192.168.77.0/24 overlaps address 192.168.77.1/24 on br0"},
		{"bridge as storage interface", cfg(`"br0"`, "exclusive", `"10.3.0.0/24"`), nil, "br0 is a bridge"},
	}
	if bond {
		conflicts = append(conflicts, struct {
			name, cfg string
			args      []string
			msg       string
		}{"bond in another mode", cfg(`"sC0"`, "active-backup", `"10.3.0.0/24"`), nil, "bond bond7 runs in mode 802.3ad"})
	}
	if vlan {
		conflicts = append(conflicts, struct {
			name, cfg string
			args      []string
			msg       string
		}{"vlan under another name", free, []string{"--iscsicfg", "300,10.1.0.0/24:301,10.2.0.0/24"}, "VLAN 300 on sA1 already exists as vl300"})
	}
	before := filesUnder(t, root)
	for _, c := range conflicts {
		t.Run(c.name, func(t *testing.T) {
			runGenconf(t, ns, c.cfg, append([]string{"-a", "--root", root, "--overwrite"}, c.args...)...).want(1, c.msg)
			if got := filesUnder(t, root); len(got) != len(before) {
				t.Fatalf("a refused run changed the files: %v", got)
			}
		})
	}
}
