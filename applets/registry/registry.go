// Package registry maps the names a keel binary can be started under to the
// applets it carries. It is dependency-free on purpose (standard library
// only): main.go builds it before anything else runs, and a duplicate name is
// a programming error that panics at start rather than a silent shadowing.
package registry

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// Prefixes that argv[0] may carry in front of an applet name: keel's own and
// the one of the tools keel is compatible with, so that automation written
// for storpool_ctl and friends keeps working.
var prefixes = []string{"keel_", "storpool_"}

// Applet is one program of the binary.
type Applet struct {
	// Name is the canonical name: "ctl" answers to keel_ctl, storpool_ctl
	// and "keel ctl".
	Name string
	// Aliases are further names argv[0] may be, used as they are (no
	// prefix stripping), e.g. "iface-genconf".
	Aliases []string
	// Bare marks an applet that is also installed under its plain name
	// (iface-genconf, disk-tester), as the tools it replaces were.
	Bare bool
	// Summary is one line for the applet list.
	Summary string
	// Main runs the applet with the arguments after its name and returns
	// the process exit code. name is the name it was started under.
	Main func(name string, args []string) int
}

// Registry holds the applets by every name they answer to.
type Registry struct {
	fallback string
	byName   map[string]*Applet
	applets  []*Applet
}

// New returns an empty registry. fallback is the canonical name of the applet
// that the bare binary name runs ("keel"); it consults argv[1] first.
func New(fallback string) *Registry {
	return &Registry{fallback: fallback, byName: map[string]*Applet{}}
}

// Register adds an applet. It panics when any of its names is taken, because
// two applets answering to one name is a build defect, not a runtime state.
func (r *Registry) Register(a Applet) {
	if a.Name == "" || a.Main == nil {
		panic("registry: applet without name or Main")
	}
	p := &a
	for _, n := range append([]string{a.Name}, a.Aliases...) {
		if old, ok := r.byName[n]; ok {
			panic(fmt.Sprintf("registry: name %q registered by both %q and %q", n, old.Name, a.Name))
		}
		r.byName[n] = p
	}
	r.applets = append(r.applets, p)
}

// Lookup resolves a program name (a path is reduced to its base) to an
// applet: an exact name or alias first, then the name without a known prefix.
func (r *Registry) Lookup(name string) (*Applet, bool) {
	base := filepath.Base(name)
	if a, ok := r.byName[base]; ok {
		return a, true
	}
	for _, p := range prefixes {
		if rest, ok := strings.CutPrefix(base, p); ok && rest != "" {
			if a, ok := r.byName[rest]; ok {
				return a, true
			}
		}
	}
	return nil, false
}

// Applets returns the registered applets sorted by name.
func (r *Registry) Applets() []Applet {
	out := make([]Applet, 0, len(r.applets))
	for _, a := range r.applets {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Dispatch runs the applet named by argv[0]. When that is the fallback
// applet and argv[1] names another applet, that one runs with the rest of
// the arguments ("keel ctl status"). An unknown argv[0] lists the applets
// and returns 2, the usage-error exit code.
func (r *Registry) Dispatch(argv []string, stderr io.Writer) int {
	if len(argv) == 0 {
		argv = []string{r.fallback}
	}
	a, ok := r.Lookup(argv[0])
	if !ok {
		fmt.Fprintf(stderr, "keel: no applet named %q\n", filepath.Base(argv[0]))
		r.WriteList(stderr)
		return 2
	}
	args := argv[1:]
	if a.Name == r.fallback && len(args) > 0 {
		if sub, ok := r.byName[args[0]]; ok && sub.Name != r.fallback {
			return sub.Main(args[0], args[1:])
		}
	}
	return a.Main(filepath.Base(argv[0]), args)
}

// WriteList prints the applets and the names they answer to.
func (r *Registry) WriteList(w io.Writer) {
	fmt.Fprintln(w, "applets (run as NAME, keel_NAME, storpool_NAME or keel NAME):")
	for _, a := range r.Applets() {
		names := a.Name
		if len(a.Aliases) > 0 {
			names += " (" + strings.Join(a.Aliases, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-28s %s\n", names, a.Summary)
	}
}

// LinkNames returns every argv[0] name an applet should be installed under:
// keel_NAME and storpool_NAME for each applet but the fallback, the plain
// name of Bare applets, and all aliases.
func (r *Registry) LinkNames() []string {
	var out []string
	for _, a := range r.Applets() {
		if a.Name != r.fallback {
			out = append(out, "keel_"+a.Name, "storpool_"+a.Name)
		}
		if a.Bare {
			out = append(out, a.Name)
		}
		out = append(out, a.Aliases...)
	}
	sort.Strings(out)
	return out
}
