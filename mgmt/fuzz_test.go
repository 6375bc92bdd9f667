package mgmt

import (
	"encoding/json"
	"errors"
	"testing"
)

var fuzzCalls = []string{"VolumeCreate", "VolumeUpdate", "VolumeSnapshot", "SnapshotUpdate", "VolumeRevert",
	"VolumeTemplateCreate", "VolumeTemplateUpdate", "PlacementGroupUpdate", "FaultSetUpdate", "DiskRegister",
	"DiskSetDescription", "DiskMarkDown", "VolumesReassign", "VolumesReassignWait", "ServiceHeartbeat", "KVSet",
	"MgmtJoin", "ClusterInit", "VolumeDelete", "iSCSIConfig", "iSCSIReport", "DiskScrubStart", "DiskScrubReport",
	"DiskRecoveryProgress", "DiskRecoveryDone", "LayersDeleted", "ClientTokensRenew"}

// FuzzDecodeRequest: the API's request decoder never panics, every refusal
// is an API error with a name, and what it accepts survives a round trip.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{"name":"v","size":1024,"template":"t","tags":{"a":"b"}}`, `[{"volume":"v","rw":[1],"detach":"all"}]`,
		`{"reassign":[{"snapshot":"s","ro":[2]}],"attachTimeout":0}`, `{"id":1,"serverId":1,"size":10,"freeBytes":5}`,
		`{"bw":"-","iops":100}`, `{"name":`, `null`, `[]`, `{"size":-1}`, `{"type":"server","id":1}`} {
		for i := range fuzzCalls {
			f.Add(uint8(i), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, call uint8, body []byte) {
		name := fuzzCalls[int(call)%len(fuzzCalls)]
		v, err := DecodeRequest(name, body)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Name == "" || ae.Status() != 400 {
				t.Fatalf("%s %q: refusal is not a 400 API error: %v", name, body, err)
			}
			return
		}
		if v == nil {
			return
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("%s: re-encode: %v", name, err)
		}
		if _, err := DecodeRequest(name, b); err != nil {
			t.Fatalf("%s: accepted %q but not its re-encoding %s: %v", name, body, b, err)
		}
	})
}
