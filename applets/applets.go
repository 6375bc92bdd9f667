// Package applets holds one thin kong command struct per applet of the keel
// binary. Each applet parses its arguments and calls into the library
// package named after its noun (node, mgmt, server, iface, ...); the logic
// lives there, not here. Library packages never import this package.
package applets

import (
	"errors"
	"fmt"

	"keel/applets/registry"
)

// Fallback is the applet the bare binary name runs: the admin CLI.
const Fallback = "cli"

// All lists the applets of the binary, in no particular order. An applet is
// listed only once it really works.
func All() []registry.Applet {
	return []registry.Applet{
		{Name: "client", Summary: "block client: serves the volumes attached to this node as NBD exports", Main: runClient},
		{Name: Fallback, Aliases: []string{"keel"}, Summary: "admin CLI: cluster, volumes, config, state; `keel APPLET` runs any applet", Main: runCLI},
		{Name: "mgmt", Summary: "management service: Raft member, StorPool-compatible JSON API, allocator", Main: runMgmt},
		{Name: "ctl", Summary: "start, stop, restart, enable, disable and show this node's keel services (systemd)", Main: runCtl},
		{Name: "server", Summary: "storage server: owns this node's data disks and serves the data protocol", Main: runServer},
		{Name: "iscsi", Summary: "iSCSI target controller: serves exported volumes on the portals of its portal groups", Main: runISCSI},
		{Name: "iface-genconf", Bare: true, Summary: "write OS network configuration (ifupdown, ifcfg, netplan) for the storage and iSCSI networks", Main: runIfaceGenconf},
	}
}

// newRegistry builds the registry the way main does, for commands that list
// or link the applets.
func newRegistry() *registry.Registry {
	r := registry.New(Fallback)
	for _, a := range All() {
		r.Register(a)
	}
	return r
}

// ExitError carries a specific exit code out of a Run method. With a nil Err
// nothing more is printed (the command already said what it had to).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError returns an error that exits 2, the code for a wrong invocation.
func usageError(format string, args ...any) error {
	return &ExitError{Code: 2, Err: fmt.Errorf(format, args...)}
}

// exitCode maps a Run error to the process exit code: 0 for none, the
// ExitError's code, else 1 (a runtime failure).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}
