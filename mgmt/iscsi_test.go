package mgmt

import (
	"context"
	"errors"
	"strings"
	"testing"

	"keel/mgmt/apiclient"
)

func iscsiCmds(cmds ...map[string]any) map[string]any { return map[string]any{"commands": cmds} }

func icmd(name string, arg map[string]any) map[string]any { return map[string]any{name: arg} }

// TestISCSIConfig drives iSCSIConfig through the API: the bindings' command
// names and fields, the rules keel enforces, all-or-nothing lists, and the
// attachment an export makes for its controller.
func TestISCSIConfig(t *testing.T) {
	_, c := mustNewService(t)
	ctx := context.Background()
	addDisks(t, c, 1, 2, 3)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "r3", "replication": 3}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "Vol_1", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumeCreate", map[string]any{"name": "busy", "size": 1 << 30, "template": "r3"}, nil)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "busy", "rw": []int{7}}}, nil)

	fails := func(name, errName string, body map[string]any) {
		t.Helper()
		_, err := c.Post(ctx, "iSCSIConfig", body, nil)
		var ae *apiclient.APIError
		if !errors.As(err, &ae) || ae.Name != errName {
			t.Errorf("%s: %v, want %s", name, err, errName)
		}
	}
	fails("target before a base name", ErrNotAllowed, iscsiCmds(icmd("createTarget", map[string]any{"volumeName": "Vol_1"})))
	fails("two commands in one element", ErrInvalidParam, iscsiCmds(map[string]any{
		"setBaseName": map[string]any{"name": "iqn.x"}, "createPortalGroup": map[string]any{"name": "pg"}}))
	fails("bad base name", ErrInvalidParam, iscsiCmds(icmd("setBaseName", map[string]any{"name": "IQN Upper"})))
	fails("bad network", ErrInvalidParam, iscsiCmds(icmd("portalGroupAddNetwork", map[string]any{"portalGroup": "pg", "net": "10.0.0.0"})))
	fails("unknown command", ErrInvalidParam, iscsiCmds(icmd("addPortal", map[string]any{})))

	mustPost(t, c, "iSCSIConfig", iscsiCmds(
		icmd("setBaseName", map[string]any{"name": "iqn.2026-01.test"}),
		icmd("createPortalGroup", map[string]any{"name": "pg"}),
		icmd("portalGroupAddNetwork", map[string]any{"portalGroup": "pg", "net": "10.1.2.3/24"}),
		icmd("createPortal", map[string]any{"portalGroup": "pg", "controller": 5, "ip": "10.1.2.5"}),
		icmd("createPortal", map[string]any{"portalGroup": "pg", "controller": 3, "ip": "10.1.2.3", "port": 3261}),
		icmd("createTarget", map[string]any{"volumeName": "Vol_1"}),
		icmd("createInitiator", map[string]any{"name": "iqn.host1", "username": "u", "secret": "secretsecret"}),
		icmd("initiatorAddNetwork", map[string]any{"initiator": "iqn.host1", "net": "10.1.2.0/24"}),
	), nil)
	// A failing element leaves the whole list unapplied.
	fails("list with a failing element", ErrNotFound, iscsiCmds(
		icmd("createPortalGroup", map[string]any{"name": "pg2"}),
		icmd("export", map[string]any{"initiator": "iqn.nobody", "portalGroup": "pg", "volumeName": "Vol_1"})))
	fails("export of a volume attached elsewhere", ErrInUse, iscsiCmds(
		icmd("createTarget", map[string]any{"volumeName": "busy"}),
		icmd("export", map[string]any{"initiator": "iqn.host1", "portalGroup": "pg", "volumeName": "busy"})))

	mustPost(t, c, "iSCSIConfig", iscsiCmds(icmd("export", map[string]any{"initiator": "iqn.host1", "portalGroup": "pg", "volumeName": "Vol_1"})), nil)
	var cfg apiclient.ISCSIConfig
	if _, err := c.Get(ctx, "iSCSIConfig", nil, &cfg); err != nil {
		t.Fatal(err)
	}
	d := cfg.ISCSI
	if d.BaseName != "iqn.2026-01.test" || len(d.PortalGroups) != 1 || len(d.Targets) != 1 || len(d.Initiators) != 1 {
		t.Fatalf("config: %+v", d)
	}
	for _, pg := range d.PortalGroups {
		if pg.Name != "pg" || len(pg.Networks) != 1 || pg.Networks[0] != (apiclient.ISCSIPGNetwork{Address: "10.1.2.0", Prefix: 24}) || len(pg.Portals) != 2 {
			t.Errorf("portal group: %+v", pg)
		}
	}
	for _, tg := range d.Targets {
		// The lowest controller with a portal in the group serves it.
		if tg.Name != "iqn.2026-01.test:vol-1" || tg.Volume != "Vol_1" || tg.CurrentControllerID != 3 || tg.GlobalID == "" {
			t.Errorf("target: %+v", tg)
		}
	}
	for _, in := range d.Initiators {
		if in.Name != "iqn.host1" || in.Username != "u" || len(in.Nets) != 1 || len(in.Exports) != 1 ||
			in.Exports[0] != (apiclient.ISCSIExport{PortalGroup: "pg", Target: "iqn.2026-01.test:vol-1"}) {
			t.Errorf("initiator: %+v", in)
		}
	}
	var cv apiclient.ClientVolumes
	if _, err := c.Get(ctx, "ClientVolumes/16387", nil, &cv); err != nil || len(cv.Volumes) != 1 || cv.Volumes[0].Name != "Vol_1" || cv.Volumes[0].ReadOnly || cv.Volumes[0].Token == 0 {
		t.Fatalf("controller 3's attachments: %+v %v", cv, err)
	}
	if _, err := c.Post(ctx, "VolumesReassign", []map[string]any{{"volume": "Vol_1", "rw": []int{1}}}, nil); err == nil {
		t.Errorf("a second read-write attachment of an exported volume was accepted")
	}
	// A forced attach elsewhere takes the volume from the controller; the
	// export brings it back once the volume is free again.
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "Vol_1", "rw": []int{1}, "force": true}}, nil)
	if _, err := c.Get(ctx, "ClientVolumes/16387", nil, &cv); err != nil || len(cv.Volumes) != 0 {
		t.Fatalf("the forced attach left controller 3's attachment: %+v %v", cv, err)
	}
	export := iscsiCmds(icmd("export", map[string]any{"initiator": "iqn.host1", "portalGroup": "pg", "volumeName": "Vol_1"}))
	fails("export again while attached elsewhere", ErrInUse, export)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "Vol_1", "detach": []int{1}}}, nil)
	mustPost(t, c, "iSCSIConfig", export, nil)
	if _, err := c.Get(ctx, "ClientVolumes/16387", nil, &cv); err != nil || len(cv.Volumes) != 1 {
		t.Fatalf("exporting again did not attach the volume to controller 3: %+v %v", cv, err)
	}
	// A controller's new process renews the fencing tokens of its
	// volumes (client.RenewTokens) before it writes.
	t0 := cv.Volumes[0].Token
	mustPost(t, c, "ClientTokensRenew/16387", map[string]any{}, nil)
	if _, err := c.Get(ctx, "ClientVolumes/16387", nil, &cv); err != nil || len(cv.Volumes) != 1 || cv.Volumes[0].Token != t0+1 {
		t.Fatalf("ClientTokensRenew/16387: %+v %v, want token %d", cv, err, t0+1)
	}
	fails("delete an exported target", ErrInUse, iscsiCmds(icmd("deleteTarget", map[string]any{"volumeName": "Vol_1"})))
	fails("delete an initiator with exports", ErrInUse, iscsiCmds(icmd("deleteInitiator", map[string]any{"name": "iqn.host1"})))
	fails("delete the serving portal", ErrInUse, iscsiCmds(icmd("deletePortal", map[string]any{"ip": "10.1.2.3", "port": 3261})))
	fails("change the base name under targets", ErrInUse, iscsiCmds(icmd("setBaseName", map[string]any{"name": "iqn.other"})))

	mustPost(t, c, "iSCSIConfig", iscsiCmds(
		icmd("exportDelete", map[string]any{"initiator": "iqn.host1", "portalGroup": "pg", "volumeName": "Vol_1"}),
		icmd("deleteTarget", map[string]any{"volumeName": "Vol_1"}),
		icmd("deletePortal", map[string]any{"ip": "10.1.2.3", "port": 3261}),
		icmd("deleteInitiator", map[string]any{"name": "iqn.host1"}),
		icmd("deletePortalGroup", map[string]any{"name": "pg"})), nil)
	if _, err := c.Get(ctx, "ClientVolumes/16387", nil, &cv); err != nil || len(cv.Volumes) != 0 {
		t.Fatalf("the last export's deletion left the attachment: %+v %v", cv, err)
	}

	// Controller reports feed iSCSISessionsInfo and iSCSInterfacesInfo.
	mustPost(t, c, "ServiceHeartbeat", map[string]any{"type": "iscsi", "id": 3, "nodeId": 3, "version": "t", "startTime": 1}, nil)
	cid := 0
	mustPost(t, c, "iSCSIReport", apiclient.ISCSIControllerReport{ControllerID: 3,
		Sessions:   []apiclient.ISCSISessionInfo{{Status: "ok", ControllerID: 3, ConnectionID: &cid, ISID: "80aa", Target: "iqn.t:x", Initiator: "iqn.i"}},
		Interfaces: []apiclient.ISCSIInterfaceInfo{{Port: 3260, State: "up", InterfaceName: "eth1"}}}, nil)
	var si struct {
		Sessions []apiclient.ISCSISessionInfo `json:"sessions"`
	}
	if _, err := c.Get(ctx, "iSCSISessionsInfo", nil, &si); err != nil || len(si.Sessions) != 1 || si.Sessions[0].Initiator != "iqn.i" {
		t.Errorf("iSCSISessionsInfo: %+v %v", si, err)
	}
	var ii struct {
		Controllers []struct {
			Status     string                         `json:"status"`
			Interfaces []apiclient.ISCSIInterfaceInfo `json:"interfaces"`
		} `json:"controllers"`
	}
	if _, err := c.Get(ctx, "iSCSInterfacesInfo", nil, &ii); err != nil || len(ii.Controllers) != 1 || ii.Controllers[0].Status != "ok" ||
		len(ii.Controllers[0].Interfaces) != 1 || !strings.HasPrefix(ii.Controllers[0].Interfaces[0].InterfaceName, "eth") {
		t.Errorf("iSCSInterfacesInfo: %+v %v", ii, err)
	}
}
