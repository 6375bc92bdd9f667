package registry

import (
	"bytes"
	"strings"
	"testing"
)

func mustNewRegistry(t *testing.T, ran *[]string) *Registry {
	t.Helper()
	r := New("cli")
	mk := func(name string, aliases ...string) Applet {
		return Applet{Name: name, Aliases: aliases, Bare: strings.Contains(name, "-"), Summary: name + " applet", Main: func(as string, args []string) int {
			*ran = append(*ran, name+"("+as+"):"+strings.Join(args, ","))
			return 0
		}}
	}
	r.Register(Applet{Name: "cli", Aliases: []string{"keel"}, Main: mk("cli").Main})
	r.Register(mk("ctl"))
	r.Register(mk("iface-genconf"))
	r.Register(mk("disk-tester", "keel_disk_tester"))
	return r
}

func TestDispatch(t *testing.T) {
	tests := []struct {
		argv []string
		want string
		code int
	}{
		{[]string{"/usr/sbin/keel_ctl", "status"}, "ctl(keel_ctl):status", 0},
		{[]string{"storpool_ctl", "stop", "-f"}, "ctl(storpool_ctl):stop,-f", 0},
		{[]string{"./keel", "ctl", "start"}, "ctl(ctl):start", 0},
		{[]string{"keel", "volume", "list"}, "cli(keel):volume,list", 0},
		{[]string{"keel"}, "cli(keel):", 0},
		{[]string{"iface-genconf", "--noop"}, "iface-genconf(iface-genconf):--noop", 0},
		{[]string{"keel_iface-genconf"}, "iface-genconf(keel_iface-genconf):", 0},
		{[]string{"disk-tester"}, "disk-tester(disk-tester):", 0},
		{[]string{"keel_disk_tester", "x"}, "disk-tester(keel_disk_tester):x", 0},
		{[]string{"/bin/nosuch"}, "", 2},
		{[]string{"keel_"}, "", 2},
	}
	for _, tt := range tests {
		var ran []string
		r := mustNewRegistry(t, &ran)
		var errb bytes.Buffer
		code := r.Dispatch(tt.argv, &errb)
		if code != tt.code {
			t.Errorf("%v: exit %d, want %d", tt.argv, code, tt.code)
		}
		got := strings.Join(ran, ";")
		if got != tt.want {
			t.Errorf("%v: ran %q, want %q", tt.argv, got, tt.want)
		}
		if tt.code == 2 && !strings.Contains(errb.String(), "ctl applet") {
			t.Errorf("%v: unknown name did not list the applets: %q", tt.argv, errb.String())
		}
	}
}

func TestRegisterDuplicatePanics(t *testing.T) {
	for _, dup := range []Applet{
		{Name: "ctl", Main: func(string, []string) int { return 0 }},
		{Name: "other", Aliases: []string{"keel_disk_tester"}, Main: func(string, []string) int { return 0 }},
		{Name: "keel", Main: func(string, []string) int { return 0 }},
	} {
		var ran []string
		r := mustNewRegistry(t, &ran)
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("registering %q twice did not panic", dup.Name)
				}
			}()
			r.Register(dup)
		}()
	}
}

func TestLinkNames(t *testing.T) {
	var ran []string
	r := mustNewRegistry(t, &ran)
	got := strings.Join(r.LinkNames(), " ")
	want := "disk-tester iface-genconf keel keel_ctl keel_disk-tester keel_disk_tester keel_iface-genconf storpool_ctl storpool_disk-tester storpool_iface-genconf"
	if got != want {
		t.Errorf("LinkNames = %q\nwant       %q", got, want)
	}
}
