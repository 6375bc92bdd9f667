package mgmt

import (
	"context"
	"encoding/json"
	"testing"
)

// Fields (and JSON kinds) that python-storpool's sptypes.py requires in
// each reply type: a client built from those bindings validates every one.
var pythonBindings = map[string]map[string]string{
	"VolumeSummary": {"name": "string", "parentName": "string", "templateName": "string", "size": "number", "replication": "number",
		"globalId": "string", "placeAll": "string", "placeTail": "string", "placeHead": "string", "parentVolumeId": "number",
		"originalParentVolumeId": "number", "visibleVolumeId": "number", "templateId": "number", "objectsCount": "number",
		"creationTimestamp": "number", "flags": "number", "tags": "object", "bw": "any", "iops": "any", "id": "number"},
	"SnapshotSummary": {"name": "string", "onVolume": "string", "autoName": "bool", "bound": "bool", "deleted": "bool",
		"transient": "bool", "globalId": "string", "size": "number", "parentName": "string"},
	"Volume":         {"targetDiskSets": "array", "objects": "array", "name": "string"},
	"VolumeStatus":   {"name": "string", "size": "number", "replication": "number", "status": "string", "snapshot": "bool", "migrating": "bool", "decreasedRedundancy": "bool", "balancerBlocked": "bool", "storedSize": "number", "onDiskSize": "number", "syncingDataBytes": "number", "syncingMetaObjects": "number", "downBytes": "number", "downDrives": "array", "missingDrives": "array", "missingTargetDrives": "array", "softEjectingDrives": "array"},
	"UpDiskSummary":  {"id": "number", "serverId": "number", "ssd": "bool", "generationLeft": "number", "model": "string", "serial": "string", "description": "string", "softEject": "string", "sectorsCount": "number", "empty": "bool", "noFua": "bool", "noFlush": "bool", "noTrim": "bool", "isWbc": "bool", "journaled": "bool", "device": "string", "entriesCount": "number", "entriesAllocated": "number", "entriesFree": "number", "objectsCount": "number", "objectsAllocated": "number", "objectsFree": "number", "objectsOnDiskSize": "number"},
	"AttachmentDesc": {"volume": "string", "snapshot": "bool", "client": "number", "rights": "string", "pos": "number"},
	"VolumeTemplateDesc": {"name": "string", "parentName": "string", "placeAll": "string", "placeTail": "string", "placeHead": "string",
		"size": "any", "replication": "any", "bw": "any", "iops": "any"},
	"PlacementGroup":           {"name": "string", "disks": "array", "id": "number"},
	"ApiOk":                    {"ok": "bool", "generation": "number"},
	"ClusterStatus":            {"clusterStatus": "string", "mgmt": "object", "clients": "object", "servers": "object", "bridges": "object"},
	"VolumeTemplateStatusDesc": {"name": "string", "volumesCount": "number", "snapshotsCount": "number", "removingSnapshotsCount": "number", "size": "number", "totalSize": "number", "availablePlaceAll": "number", "availablePlaceTail": "number", "availablePlaceHead": "number", "capacityPlaceAll": "number", "capacityPlaceTail": "number", "capacityPlaceHead": "number", "stored": "object"},
}

func jsonKindOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return "null"
	}
}

func checkBinding(t *testing.T, typ string, raw json.RawMessage) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: not an object: %s", typ, raw)
	}
	for f, kind := range pythonBindings[typ] {
		v, ok := m[f]
		switch {
		case !ok:
			t.Errorf("%s: field %s missing", typ, f)
		case kind != "any" && jsonKindOf(v) != kind:
			t.Errorf("%s: field %s is %s, python-storpool wants %s", typ, f, jsonKindOf(v), kind)
		}
	}
}

func TestWireFieldsMatchPythonBindings(t *testing.T) {
	_, c := mustNewService(t)
	ctx := context.Background()
	addDisks(t, c, 1, 2)
	mustPost(t, c, "PlacementGroupUpdate/pg", map[string]any{"addDisks": []int{100, 101}}, nil)
	mustPost(t, c, "VolumeTemplateCreate", map[string]any{"name": "t", "replication": 2, "placeAll": "pg", "placeTail": "pg"}, nil)
	if _, err := c.Post(ctx, "VolumeCreate", map[string]any{"name": "v", "size": 1 << 30, "template": "t"}, nil); err != nil {
		t.Fatal(err)
	}
	r, err := c.Post(ctx, "VolumeSnapshot/v", map[string]any{"name": "s"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkBinding(t, "ApiOk", r.Data)
	mustPost(t, c, "VolumesReassign", []map[string]any{{"volume": "v", "rw": []int{1}}}, nil)
	get := func(call string) json.RawMessage {
		var raw json.RawMessage
		if _, err := c.Get(ctx, call, nil, &raw); err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		return raw
	}
	var list []json.RawMessage
	json.Unmarshal(get("VolumesList"), &list)
	checkBinding(t, "VolumeSummary", list[0])
	json.Unmarshal(get("SnapshotsList"), &list)
	checkBinding(t, "SnapshotSummary", list[0])
	checkBinding(t, "VolumeSummary", list[0])
	json.Unmarshal(get("Volume/v"), &list)
	checkBinding(t, "Volume", list[0])
	checkBinding(t, "VolumeSummary", list[0])
	json.Unmarshal(get("AttachmentsList"), &list)
	checkBinding(t, "AttachmentDesc", list[0])
	json.Unmarshal(get("VolumeTemplatesList"), &list)
	checkBinding(t, "VolumeTemplateDesc", list[0])
	json.Unmarshal(get("VolumeTemplatesStatus"), &list)
	checkBinding(t, "VolumeTemplateStatusDesc", list[0])
	var byKey map[string]json.RawMessage
	json.Unmarshal(get("DisksList"), &byKey)
	checkBinding(t, "UpDiskSummary", byKey["100"])
	json.Unmarshal(get("VolumesGetStatus"), &byKey)
	checkBinding(t, "VolumeStatus", byKey["v"])
	json.Unmarshal(get("PlacementGroupsList"), &byKey)
	checkBinding(t, "PlacementGroup", byKey["pg"])
	checkBinding(t, "ClusterStatus", get("ServicesList"))
}
