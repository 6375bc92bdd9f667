package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"keel/internal/freeport"
	"keel/mgmt/apiclient"
)

// The demo's iSCSI export: keel_iscsi runs on node 1 (controller 1) with
// one portal on loopback and serves volume demo-iscsi. It is a volume of
// its own because a volume has one read-write attachment, and the demo
// volume's is the NBD client's.
const (
	ISCSIVolume      = "demo-iscsi"
	ISCSIBaseName    = "iqn.2026-01.io.keel.demo"
	ISCSIPortalGroup = "demo"
	iscsiController  = clientNode
)

// ISCSIInitiators are the initiators the demo allows, without CHAP, from
// 127.0.0.1: the default names of libiscsi's tools and of QEMU, so that
// they work without an initiator-name option.
var ISCSIInitiators = []string{
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-ls",
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-inq",
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
	"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2",
	"iqn.2010-11.libiscsi:iscsi-perf",
	"iqn.2008-11.org.linux-kvm",
}

// ISCSITarget is the demo volume's target name.
func ISCSITarget() string { return ISCSIBaseName + ":" + ISCSIVolume }

// ISCSIPortal is the demo's portal address.
func (c *Cluster) ISCSIPortal() string { return fmt.Sprintf("127.0.0.1:%d", c.ports.ISCSI) }

// startISCSI creates the demo's iSCSI configuration (once), starts
// keel_iscsi and waits until it serves the export.
func (c *Cluster) startISCSI(ctx context.Context) error {
	if c.ports.ISCSI == 0 { // a demo directory from before keel_iscsi
		free, err := freeport.Take(1)
		if err != nil {
			return err
		}
		c.ports.ISCSI = free[0]
		b, _ := json.MarshalIndent(c.ports, "", "  ")
		if err := os.WriteFile(filepath.Join(c.o.Dir, "ports.json"), b, 0o644); err != nil {
			return err
		}
	}
	if _, err := c.api.Get(ctx, "Volume/"+ISCSIVolume, nil, nil); err != nil {
		if _, err := c.api.Post(ctx, "VolumeCreate", map[string]any{"name": ISCSIVolume, "size": c.o.VolumeSize, "template": demoTemplate}, nil); err != nil {
			return fmt.Errorf("demo: create volume %s: %w", ISCSIVolume, err)
		}
	}
	var cfg apiclient.ISCSIConfig
	if _, err := c.api.Get(ctx, "iSCSIConfig", nil, &cfg); err != nil {
		return fmt.Errorf("demo: read the iSCSI configuration: %w", err)
	}
	cmds := c.iscsiCommands(&cfg.ISCSI)
	if len(cmds) > 0 {
		c.o.step("configuring iSCSI: base name %s, portal group %s on %s, target for volume %s", ISCSIBaseName, ISCSIPortalGroup, c.ISCSIPortal(), ISCSIVolume)
		if _, err := c.api.Post(ctx, "iSCSIConfig", map[string]any{"commands": cmds}, nil); err != nil {
			return fmt.Errorf("demo: configure iSCSI: %w", err)
		}
	}
	c.o.step("starting keel_iscsi (controller %d) on portal %s", iscsiController, c.ISCSIPortal())
	p, err := c.start("iscsi", iscsiController)
	if err != nil {
		return err
	}
	// Ready when the controller applied the attachment (its client
	// heartbeat caught up with the generation) and the portal accepts.
	return c.waitFor(ctx, "keel_iscsi", []*proc{p}, 30*time.Second, func() (bool, error) {
		var dump []struct {
			ID           int    `json:"id"`
			ConfigStatus string `json:"configStatus"`
		}
		if _, err := c.api.Get(ctx, "ClientsConfigDump", nil, &dump); err != nil {
			return false, err
		}
		ok := false
		for _, d := range dump {
			ok = ok || d.ID == apiclient.ISCSIClientBase+iscsiController && d.ConfigStatus == "ok"
		}
		if !ok {
			return false, fmt.Errorf("controller %d has not applied the configuration yet", iscsiController)
		}
		conn, err := net.DialTimeout("tcp", c.ISCSIPortal(), time.Second)
		if err != nil {
			return false, err
		}
		conn.Close()
		return true, nil
	})
}

// iscsiCommands are the iSCSIConfig commands that create what the demo's
// configuration lacks.
func (c *Cluster) iscsiCommands(cfg *apiclient.ISCSIConfigData) []map[string]any {
	var cmds []map[string]any
	add := func(name string, arg map[string]any) { cmds = append(cmds, map[string]any{name: arg}) }
	if cfg.BaseName == "" {
		add("setBaseName", map[string]any{"name": ISCSIBaseName})
	}
	pgFound, portalFound := false, false
	for _, pg := range cfg.PortalGroups {
		if pg.Name == ISCSIPortalGroup {
			pgFound = true
			for _, p := range pg.Portals {
				portalFound = portalFound || net.JoinHostPort(p.IP, strconv.Itoa(p.Port)) == c.ISCSIPortal()
			}
		}
	}
	if !pgFound {
		add("createPortalGroup", map[string]any{"name": ISCSIPortalGroup})
		add("portalGroupAddNetwork", map[string]any{"portalGroup": ISCSIPortalGroup, "net": "127.0.0.0/8"})
	}
	if !portalFound {
		add("createPortal", map[string]any{"portalGroup": ISCSIPortalGroup, "controller": iscsiController, "ip": "127.0.0.1", "port": c.ports.ISCSI})
	}
	hasTarget := false
	for _, t := range cfg.Targets {
		hasTarget = hasTarget || t.Volume == ISCSIVolume
	}
	if !hasTarget {
		add("createTarget", map[string]any{"volumeName": ISCSIVolume})
	}
	for _, name := range ISCSIInitiators {
		var in *apiclient.ISCSIInitiator
		for _, i := range cfg.Initiators {
			if i.Name == name {
				in = &i
			}
		}
		if in == nil {
			add("createInitiator", map[string]any{"name": name, "username": "", "secret": ""})
			add("initiatorAddNetwork", map[string]any{"initiator": name, "net": "127.0.0.1/32"})
		}
		exported := false
		if in != nil {
			for _, e := range in.Exports {
				exported = exported || e.PortalGroup == ISCSIPortalGroup && e.Target == ISCSITarget()
			}
		}
		if !exported {
			add("export", map[string]any{"initiator": name, "portalGroup": ISCSIPortalGroup, "volumeName": ISCSIVolume})
		}
	}
	return cmds
}

// iscsiEnv adds the iSCSI variables of demo.env.
func (c *Cluster) iscsiEnv(env map[string]string) {
	env["KEEL_ISCSI_URL"] = fmt.Sprintf("iscsi://%s/%s/0", c.ISCSIPortal(), ISCSITarget())
	env["KEEL_ISCSI_PORTAL"] = c.ISCSIPortal()
	env["KEEL_ISCSI_TARGET"] = ISCSITarget()
	env["KEEL_ISCSI_VOLUME"] = ISCSIVolume
	env["KEEL_ISCSI_PIDS"] = c.pids("iscsi")
}

var iscsiEnvOrder = []string{"KEEL_ISCSI_URL", "KEEL_ISCSI_PORTAL", "KEEL_ISCSI_TARGET", "KEEL_ISCSI_VOLUME", "KEEL_ISCSI_PIDS"}

func (c *Cluster) iscsiInstructions() string {
	e := c.env
	return fmt.Sprintf(`
iSCSI (keel_iscsi, volume %s, replication 3):
  iscsi-ls -s iscsi://%s
  iscsi-inq %s
  qemu-img info %s
  KEEL_CONFIG=%s keel iscsi sessions
`, ISCSIVolume, e["KEEL_ISCSI_PORTAL"], e["KEEL_ISCSI_URL"], e["KEEL_ISCSI_URL"], e["KEEL_CONFIG"])
}
