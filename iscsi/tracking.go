package iscsi

import (
	"database/sql"
	"fmt"
	"net/netip"
	"time"

	"keel/mgmt/apiclient"
)

// Initiator tracking: every address an initiator logged in from, to a
// portal group that exports a target to it, is kept in the node state
// (iscsi_initiators_seen) with when it was first and last seen, until the
// initiator has no export left in that portal group or is deleted from
// the configuration. The monitoring of their reachability reads it.

func (c *Controller) loggedInFunc(pg string) func(SessionInfo) {
	return func(si SessionInfo) {
		if si.Target == "" {
			return
		}
		for _, cn := range si.Conns {
			c.seen(si.Initiator, cn.Remote, pg, time.Now())
		}
	}
}

// seen records one initiator address if the initiator has an export in pg.
func (c *Controller) seen(initiator, remote, pg string, at time.Time) {
	if c.o.State == nil {
		return
	}
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return
	}
	in, ok := c.initiator(initiator)
	if !ok || !hasExportIn(in.Exports, pg) {
		return
	}
	if _, err := c.o.State.Exec(`INSERT INTO iscsi_initiators_seen (initiator, address, portal_group, first_seen, last_seen)
		VALUES (?, ?, ?, ?, ?) ON CONFLICT (initiator, address, portal_group) DO UPDATE SET last_seen = excluded.last_seen`,
		initiator, ap.Addr().Unmap().String(), pg, at.Unix(), at.Unix()); err != nil {
		c.log.Warn("record initiator address", "initiator", initiator, "err", err)
	}
}

func hasExportIn(exports []apiclient.ISCSIExport, pg string) bool {
	for _, e := range exports {
		if e.PortalGroup == pg {
			return true
		}
	}
	return false
}

// track refreshes the last-seen time of the addresses of live sessions and
// forgets the addresses of initiators that lost their exports.
func (c *Controller) track() {
	if c.o.State == nil {
		return
	}
	now := time.Now()
	for _, g := range c.groups {
		for _, si := range g.srv.Sessions() {
			if si.Target == "" {
				continue
			}
			for _, cn := range si.Conns {
				c.seen(si.Initiator, cn.Remote, g.name, now)
			}
		}
	}
	rows, err := c.o.State.Query(`SELECT DISTINCT initiator, portal_group FROM iscsi_initiators_seen`)
	if err != nil {
		c.log.Warn("read initiator addresses", "err", err)
		return
	}
	type key struct{ initiator, pg string }
	var stale []key
	for rows.Next() {
		var k key
		if rows.Scan(&k.initiator, &k.pg) != nil {
			continue
		}
		if in, ok := c.initiator(k.initiator); !ok || !hasExportIn(in.Exports, k.pg) {
			stale = append(stale, k)
		}
	}
	rows.Close()
	for _, k := range stale {
		c.o.State.Exec(`DELETE FROM iscsi_initiators_seen WHERE initiator = ? AND portal_group = ?`, k.initiator, k.pg)
	}
}

// SeenInitiator is one row of the initiator tracking.
type SeenInitiator struct {
	Initiator   string `json:"initiator"`
	Address     string `json:"address"`
	PortalGroup string `json:"portalGroup"`
	FirstSeen   int64  `json:"firstSeen"`
	LastSeen    int64  `json:"lastSeen"`
}

// SeenInitiators lists the tracked initiator addresses of a node state.
func SeenInitiators(db *sql.DB) ([]SeenInitiator, error) {
	rows, err := db.Query(`SELECT initiator, address, portal_group, first_seen, last_seen FROM iscsi_initiators_seen
		ORDER BY initiator, portal_group, address`)
	if err != nil {
		return nil, fmt.Errorf("read initiator addresses: %w", err)
	}
	defer rows.Close()
	out := []SeenInitiator{}
	for rows.Next() {
		var s SeenInitiator
		if err := rows.Scan(&s.Initiator, &s.Address, &s.PortalGroup, &s.FirstSeen, &s.LastSeen); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
