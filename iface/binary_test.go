package iface

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"keel/internal/testbin"
)

// genconf runs the built binary's iface-genconf with the configuration
// text cfg, optionally inside network namespace netns (via ip netns exec).
type genconf struct {
	t      *testing.T
	cfg    string
	netns  string
	stdout string
	stderr string
	code   int
}

func runGenconf(t *testing.T, netns, cfg string, args ...string) genconf {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keel.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	argv := append([]string{testbin.Keel(t), "iface-genconf", "--config", path}, args...)
	if netns != "" {
		argv = append([]string{testbin.NeedTool(t, "ip"), "netns", "exec", netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	g := genconf{t: t, cfg: cfg, netns: netns, stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		g.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return g
}

func (g genconf) want(code int, substr string) {
	g.t.Helper()
	if g.code != code || !strings.Contains(g.stdout+g.stderr, substr) {
		g.t.Fatalf("exit %d, want %d with %q\nstdout:\n%s\nstderr:\n%s", g.code, code, substr, g.stdout, g.stderr)
	}
}

// filesUnder lists the regular files under root, relative to it.
func filesUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const lacpConfig = `
[node]
id = 7
[storage_net]
interfaces = ["eth2", "eth3"]
mode = "lacp"
networks = ["10.3.0.0/24"]
vlan = 100
iscsi_ip_offset = 50
`

// Create, rerun (nothing to change), refuse a hand-edited file without
// writing anything, replace it with --overwrite; --noop and --json.
func TestBinaryWriteRerunOverwrite(t *testing.T) {
	root := t.TempDir()
	args := []string{"--style", "ifupdown", "--root", root, "--iscsicfg", "201,10.1.201.0/24"}
	runGenconf(t, "", lacpConfig, args...).want(0, "created 5, replaced 0, 0 unchanged")
	want := []string{"etc/network/interfaces.d/keel-bond0", "etc/network/interfaces.d/keel-bond0-100", "etc/network/interfaces.d/keel-bond0-201",
		"etc/network/interfaces.d/keel-eth2", "etc/network/interfaces.d/keel-eth3"}
	if got := filesUnder(t, root); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("files %v, want %v", got, want)
	}
	b, err := os.ReadFile(filepath.Join(root, "etc/network/interfaces.d/keel-bond0-201"))
	if err != nil || !strings.Contains(string(b), "address 10.1.201.57/24") || !strings.Contains(string(b), "vlan-raw-device bond0") {
		t.Fatalf("keel-bond0-201: %q, %v", b, err)
	}
	runGenconf(t, "", lacpConfig, args...).want(0, "nothing to change: all 5 files are up to date")

	noop := runGenconf(t, "", lacpConfig, append(args, "--noop", "--iscsicfg", "202,10.1.202.0/24")...)
	noop.want(0, "would create 1, replace 0; 5 unchanged, 0 differ (--noop: nothing written)")
	if !strings.Contains(noop.stdout, "# create "+root+"/etc/network/interfaces.d/keel-bond0-202") || !strings.Contains(noop.stdout, "address 10.1.202.57/24") {
		t.Fatalf("--noop does not print the file it would write:\n%s", noop.stdout)
	}
	if len(filesUnder(t, root)) != 5 {
		t.Fatal("--noop wrote a file")
	}

	edited := filepath.Join(root, "etc/network/interfaces.d/keel-bond0-100")
	if err := os.WriteFile(edited, []byte("# by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runGenconf(t, "", lacpConfig, append(args, "--iscsicfg", "202,10.1.202.0/24")...).want(1, edited+"; nothing was written")
	if len(filesUnder(t, root)) != 5 {
		t.Fatal("a refused run wrote a file")
	}
	js := runGenconf(t, "", lacpConfig, append(args, "--overwrite", "--json")...)
	js.want(0, `"action": "replace"`)
	var rep struct {
		Style   Style         `json:"style"`
		Changed int           `json:"changed"`
		Ifaces  []Iface       `json:"interfaces"`
		Files   []PlannedFile `json:"files"`
	}
	if err := json.Unmarshal([]byte(js.stdout), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, js.stdout)
	}
	if rep.Style != StyleIfupdown || rep.Changed != 1 || len(rep.Files) != 5 || len(rep.Ifaces) != 5 || rep.Ifaces[3].Address.String() != "10.3.0.7/24" {
		t.Fatalf("--json report: %+v", rep)
	}
	if b, _ := os.ReadFile(edited); !strings.Contains(string(b), "address 10.3.0.7/24") {
		t.Fatalf("--overwrite left %q", b)
	}
}

// Every class of bad input: exit 2 for a wrong invocation, 1 for inputs
// that cannot be laid out; the message names the value; nothing is written.
func TestBinaryBadInput(t *testing.T) {
	excl := "[node]\nid = 7\n[storage_net]\ninterfaces = [\"eth2\", \"eth3\"]\nnetworks = [\"10.3.0.0/24\", \"10.3.1.0/24\"]\n"
	cases := []struct {
		name string
		cfg  string
		args []string
		code int
		msg  string
	}{
		{"no style", lacpConfig, nil, 2, "give --style"},
		{"unknown style", lacpConfig, []string{"--style", "yast"}, 2, "yast"},
		{"unknown flag", lacpConfig, []string{"--style", "ifcfg", "--bogus"}, 2, "--bogus"},
		{"iscsicfg without network", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "201"}, 2, `"201" is not VLAN,IP/PREFIX`},
		{"iscsicfg vlan 0", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "0,10.1.0.0/24"}, 2, "VLAN 0 is outside 1..4094"},
		{"iscsicfg vlan 4095", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "201,10.1.0.0/24:4095,10.2.0.0/24"}, 2, "VLAN 4095"},
		{"iscsicfg host bits", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "201,10.1.0.9/24"}, 2, `"10.1.0.9/24" has host bits set`},
		{"iscsicfg bad prefix", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "201,10.1.0.0/40"}, 2, `"10.1.0.0/40"`},
		{"negative offset", lacpConfig, []string{"--style", "ifcfg", "--iscsi-ip-offset", "-3"}, 2, "-3"},
		{"iscsi address outside", lacpConfig, []string{"--style", "ifcfg", "--iscsicfg", "201,10.1.0.0/26", "--iscsi-ip-offset", "60"}, 1, "address 10.1.0.67 (base + 67) is outside the network"},
		{"storage address outside", strings.Replace(lacpConfig, "vlan = 100", "vlan = 100\naddress_offset = 250", 1), []string{"--style", "netplan"}, 1, "10.3.1.1"},
		{"iscsi overlaps storage", lacpConfig, []string{"--style", "netplan", "--iscsicfg", "201,10.3.0.128/25"}, 1, "overlaps storage_net.networks 10.3.0.0/24"},
		{"iscsi vlan is the storage vlan", lacpConfig, []string{"--style", "netplan", "--iscsicfg", "100,10.1.0.0/24"}, 1, "both need interface bond0.100"},
		{"more paths than interfaces", excl, []string{"--style", "netplan", "--iscsicfg", "201,10.1.0.0/24:202,10.2.0.0/24:203,10.4.0.0/24"}, 1, "3 paths but only 2"},
		{"storage network in config", strings.Replace(excl, "10.3.1.0/24", "10.3.1.0/33", 1), []string{"--style", "netplan"}, 1, `"10.3.1.0/33"`},
		{"config value out of range", lacpConfig + "mtu = 20000\n", []string{"--style", "netplan"}, 1, "storage_net.mtu: 20000 is out of range"},
		{"unknown mode", strings.Replace(lacpConfig, `"lacp"`, `"balance-rr"`, 1), []string{"--style", "netplan"}, 1, `"balance-rr"`},
		{"auto without a known style", lacpConfig, []string{"-a"}, 1, "give --style"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			runGenconf(t, "", tc.cfg, append(tc.args, "--root", root)...).want(tc.code, tc.msg)
			if f := filesUnder(t, root); len(f) != 0 {
				t.Fatalf("wrote %v", f)
			}
		})
	}
}

// --auto reads this host's links: an interface it does not have is an
// error naming it (read-only netlink, safe in the machine's namespace).
func TestBinaryAutoUnknownInterface(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/sysconfig/network-scripts"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(lacpConfig, `["eth2", "eth3"]`, `["keelnosuch0"]`, 1)
	runGenconf(t, "", cfg, "-a", "--root", root).want(1, "interface keelnosuch0 does not exist")
	if f := filesUnder(t, root); len(f) != 0 {
		t.Fatalf("wrote %v", f)
	}
}

func TestBinaryHelp(t *testing.T) {
	g := runGenconf(t, "", "", "--help")
	for _, s := range []string{"--iscsicfg", "--iscsi-ip-offset", "--noop", "--overwrite", "--root", "--auto", "EXIT STATUS", "LAYOUTS", "netplan"} {
		if !strings.Contains(g.stdout, s) {
			t.Errorf("--help does not mention %s", s)
		}
	}
	g.want(0, "iface-genconf")
}
