// Package ctl starts, stops, restarts, enables, disables and reports the
// keel services of one node through systemd's D-Bus API (go-systemd over
// systemd's private socket; systemctl is never run). It knows which services
// the node has (keel_*.service unit files plus the roles of the node's
// configuration), orders them (mgmt, server, then the rest; stop in
// reverse), waits for every systemd job, and refuses to stop this node's
// server when mgmt says that would lose the last up copy of some data.
package ctl

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

var (
	// ErrBadName means a service name is not a keel service name.
	ErrBadName = errors.New("not a keel service name")
	// ErrNotInstalled means systemd knows no unit file for the service.
	ErrNotInstalled = errors.New("unit not installed")
	// ErrStopRefused means the safety check refused to stop the server.
	ErrStopRefused = errors.New("refusing to stop the server")
	// ErrNoJournald means journald is not running, so there is no journal
	// to show.
	ErrNoJournald = errors.New("journald is not running on this node")
)

// Service is one keel service of the node: its role and its systemd unit.
type Service struct {
	Role string `json:"service"` // "mgmt", "server", ...
	Unit string `json:"unit"`    // "keel_mgmt.service"
}

// unitPrefix and unitSuffix frame a role into its unit name.
const (
	unitPrefix = "keel_"
	unitSuffix = ".service"
	maxRoleLen = 64
)

// ParseService accepts a service as an operator writes it: "mgmt",
// "keel_mgmt", "keel_mgmt.service", "storpool_mgmt" or
// "storpool_mgmt.service" all name keel_mgmt.service.
func ParseService(name string) (Service, error) {
	role := strings.TrimSuffix(name, unitSuffix)
	if r, ok := strings.CutPrefix(role, unitPrefix); ok {
		role = r
	} else if r, ok := strings.CutPrefix(role, "storpool_"); ok {
		role = r
	}
	if role == "" || len(role) > maxRoleLen || !validRole(role) {
		return Service{}, fmt.Errorf("%q: %w (use a role such as mgmt, server, client, or a unit keel_NAME.service)", name, ErrBadName)
	}
	return Service{Role: role, Unit: unitPrefix + role + unitSuffix}, nil
}

// validRole admits the characters unit names of keel services use. Template
// units (keel_x@.service) are not services of their own.
func validRole(s string) bool {
	if s[0] == '-' || s[0] == '_' {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// rank is a service's place in the start order: mgmt must answer before a
// server can join, servers must be up before clients, bridges and iSCSI
// targets can serve volumes, and everything else (nvmed, stat, ...) comes
// last. Stopping walks the same order backwards.
func rank(role string) int {
	switch role {
	case "mgmt":
		return 0
	case "server":
		return 1
	case "client", "bridge", "iscsi":
		return 2
	default:
		return 3
	}
}

// StartOrder sorts services into the order they are started in (stop
// order is its reverse), dropping duplicates.
func StartOrder(svcs []Service) []Service {
	out := slices.Clone(svcs)
	slices.SortFunc(out, func(a, b Service) int {
		return cmp.Or(cmp.Compare(rank(a.Role), rank(b.Role)), cmp.Compare(a.Role, b.Role))
	})
	return slices.CompactFunc(out, func(a, b Service) bool { return a.Unit == b.Unit })
}

// StopOrder is StartOrder reversed.
func StopOrder(svcs []Service) []Service {
	out := StartOrder(svcs)
	slices.Reverse(out)
	return out
}
