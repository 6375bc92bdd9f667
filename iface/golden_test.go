package iface

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/ from the current output")

// layouts are the storage-network layouts of the golden files, for node 5.
var layouts = map[string]StorageNet{
	"exclusive": {Interfaces: []string{"eth2", "eth3"}, Mode: ModeExclusive, MTU: 9000,
		Networks: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24"), netip.MustParsePrefix("10.3.1.0/24")}},
	"active-backup": {Interfaces: []string{"eth2", "eth3"}, Mode: ModeActiveBackup, Bond: "bond0", MTU: 9000, VLAN: 10,
		Networks: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/24")}, AddressOffset: 10},
	"lacp": {Interfaces: []string{"ens1f0", "ens1f1"}, Mode: ModeLACP, Bond: "sp0", MTU: 1500,
		Networks: []netip.Prefix{netip.MustParsePrefix("10.3.0.0/16")}},
}

var portalGroups = map[string]string{
	"single":    "201,10.1.201.0/24",
	"multipath": "201,10.1.201.0/24:202,10.1.202.0/24",
}

func mustParseISCSICfg(t *testing.T, s string) PortalGroup {
	t.Helper()
	g, err := ParseISCSICfg(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// renderAll is the golden text of a plan: every file with its path and mode.
func renderAll(files []File) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "=== /%s (%s, mode %04o)\n%s", f.Path, f.Iface, f.Mode, f.Content)
	}
	return b.String()
}

// Every style x layout x single/multipath portal group against its golden
// file (go test ./iface -run Golden -update rewrites them).
func TestGolden(t *testing.T) {
	for _, style := range Styles {
		for lname, s := range layouts {
			for gname, spec := range portalGroups {
				name := fmt.Sprintf("%s-%s-%s", style, lname, gname)
				t.Run(name, func(t *testing.T) {
					ifaces, err := Layout(Input{NodeID: 5, Storage: s, ISCSIOffset: 100,
						PortalGroups: []PortalGroup{mustParseISCSICfg(t, spec)}})
					if err != nil {
						t.Fatal(err)
					}
					files, err := Render(style, ifaces)
					if err != nil {
						t.Fatal(err)
					}
					got := renderAll(files)
					path := filepath.Join("testdata", name+".golden")
					if *update {
						if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					want, err := os.ReadFile(path)
					if err != nil {
						t.Fatalf("%v (run go test ./iface -run Golden -update to create it)", err)
					}
					if got != string(want) {
						t.Errorf("output differs from %s (rerun with -update if the change is intended):\n%s", path, got)
					}
				})
			}
		}
	}
}
