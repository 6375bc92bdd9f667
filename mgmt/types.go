package mgmt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Wire types of the API. Field names and types follow python-storpool's
// sptypes.py; keel's own fields are marked as extensions in docs/API.md.

// VolumeLimits are the iops and bandwidth limits; "-" or absent means
// unlimited, which keel stores as 0.
type VolumeLimits struct {
	Bw   Limit `json:"bw"`
	Iops Limit `json:"iops"`
}

// Limit is an integer limit that is written "-" when unlimited.
type Limit int64

// MarshalJSON writes 0 as "-".
func (l Limit) MarshalJSON() ([]byte, error) {
	if l == 0 {
		return []byte(`"-"`), nil
	}
	return fmt.Appendf(nil, "%d", int64(l)), nil
}

// UnmarshalJSON accepts a non-negative integer or "-".
func (l *Limit) UnmarshalJSON(b []byte) error {
	if string(b) == `"-"` || string(b) == "null" {
		*l = 0
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil || n < 0 {
		return errors.New(`must be a non-negative integer or "-"`)
	}
	*l = Limit(n)
	return nil
}

// VolumeSummary is one entry of VolumesList and SnapshotsList.
type VolumeSummary struct {
	ID                int64             `json:"id"`
	Name              string            `json:"name"`
	ParentName        string            `json:"parentName"`
	TemplateName      string            `json:"templateName"`
	Size              int64             `json:"size"`
	Replication       int               `json:"replication"`
	GlobalID          string            `json:"globalId"`
	PlaceAll          string            `json:"placeAll"`
	PlaceTail         string            `json:"placeTail"`
	PlaceHead         string            `json:"placeHead"`
	ParentVolumeID    int64             `json:"parentVolumeId"`
	OriginalParentID  int64             `json:"originalParentVolumeId"`
	VisibleVolumeID   int64             `json:"visibleVolumeId"`
	TemplateID        int64             `json:"templateId"`
	ObjectsCount      int64             `json:"objectsCount"`
	CreationTimestamp int64             `json:"creationTimestamp"`
	Flags             int               `json:"flags"`
	Tags              map[string]string `json:"tags"`
	ReuseServer       bool              `json:"reuseServer"`
	VolumeLimits
	// Snapshot-only fields (SnapshotSummary).
	OnVolume  *string `json:"onVolume,omitempty"`
	AutoName  *bool   `json:"autoName,omitempty"`
	Bound     *bool   `json:"bound,omitempty"`
	Deleted   *bool   `json:"deleted,omitempty"`
	Transient *bool   `json:"transient,omitempty"`
	// keel extensions.
	PlacementViolation bool  `json:"placementViolation"`
	FencingToken       int64 `json:"fencingToken"`
}

// VolumeDetail is the reply of Volume and Snapshot: the summary plus the
// disk-set table.
type VolumeDetail struct {
	VolumeSummary
	TargetDiskSets [][]int `json:"targetDiskSets"`
	Objects        [][]int `json:"objects"`
}

// VolumeStatus is one entry of VolumesGetStatus.
type VolumeStatus struct {
	Name                string            `json:"name"`
	Size                int64             `json:"size"`
	Replication         int               `json:"replication"`
	Status              string            `json:"status"`
	Snapshot            bool              `json:"snapshot"`
	Migrating           bool              `json:"migrating"`
	DecreasedRedundancy bool              `json:"decreasedRedundancy"`
	BalancerBlocked     bool              `json:"balancerBlocked"`
	StoredSize          int64             `json:"storedSize"`
	OnDiskSize          int64             `json:"onDiskSize"`
	SyncingDataBytes    int64             `json:"syncingDataBytes"`
	SyncingMetaObjects  int64             `json:"syncingMetaObjects"`
	DownBytes           int64             `json:"downBytes"`
	DownDrives          []int             `json:"downDrives"`
	MissingDrives       []int             `json:"missingDrives"`
	MissingTargetDrives []int             `json:"missingTargetDrives"`
	SoftEjectingDrives  []int             `json:"softEjectingDrives"`
	Tags                map[string]string `json:"tags"`
}

// VolumePolicy are the placement and limit fields shared by create and
// update requests.
type VolumePolicy struct {
	PlaceAll    *string           `json:"placeAll,omitempty"`
	PlaceTail   *string           `json:"placeTail,omitempty"`
	PlaceHead   *string           `json:"placeHead,omitempty"`
	Replication *int              `json:"replication,omitempty"`
	Bw          *Limit            `json:"bw,omitempty"`
	Iops        *Limit            `json:"iops,omitempty"`
	ReuseServer *bool             `json:"reuseServer,omitempty"`
	Tags        map[string]string `json:"tags,omitempty"`
}

// VolumeCreateDesc is the body of VolumeCreate.
type VolumeCreateDesc struct {
	VolumePolicy
	Name     string `json:"name,omitempty"`
	Size     *int64 `json:"size,omitempty"`
	Parent   string `json:"parent,omitempty"`
	Template string `json:"template,omitempty"`
	BaseOn   string `json:"baseOn,omitempty"`
	// DiskSets is a keel extension: the disk-set table size (power of two).
	DiskSets int `json:"diskSets,omitempty"`
}

// VolumeUpdateDesc is the body of VolumeUpdate.
type VolumeUpdateDesc struct {
	VolumePolicy
	Rename   *string `json:"rename,omitempty"`
	Size     *int64  `json:"size,omitempty"`
	SizeAdd  *int64  `json:"sizeAdd,omitempty"`
	Template *string `json:"template,omitempty"`
	ShrinkOk bool    `json:"shrinkOk,omitempty"`
}

// VolumeSnapshotDesc is the body of VolumeSnapshot.
type VolumeSnapshotDesc struct {
	Name             string            `json:"name,omitempty"`
	Bind             bool              `json:"bind,omitempty"`
	TargetDeleteDate int64             `json:"targetDeleteDate,omitempty"`
	DeleteAfter      int64             `json:"deleteAfter,omitempty"`
	Tags             map[string]string `json:"tags,omitempty"`
}

// SnapshotUpdateDesc is the body of SnapshotUpdate.
type SnapshotUpdateDesc struct {
	VolumePolicy
	Rename *string `json:"rename,omitempty"`
	Bind   *bool   `json:"bind,omitempty"`
}

// VolumeRevertDesc is the body of VolumeRevert.
type VolumeRevertDesc struct {
	ToSnapshot string `json:"toSnapshot"`
}

// TemplateDesc is a VolumeTemplatesList entry.
type TemplateDesc struct {
	ID          int64  `json:"id"`
	Name        string `json:"name"`
	ParentName  string `json:"parentName"`
	PlaceAll    string `json:"placeAll"`
	PlaceTail   string `json:"placeTail"`
	PlaceHead   string `json:"placeHead"`
	Size        any    `json:"size"`
	Replication any    `json:"replication"`
	ReuseServer bool   `json:"reuseServer"`
	VolumeLimits
}

// TemplateCreateDesc is the body of VolumeTemplateCreate.
type TemplateCreateDesc struct {
	VolumePolicy
	Name   string `json:"name"`
	Parent string `json:"parent,omitempty"`
	Size   *int64 `json:"size,omitempty"`
}

// TemplateUpdateDesc is the body of VolumeTemplateUpdate.
type TemplateUpdateDesc struct {
	VolumePolicy
	Rename    *string `json:"rename,omitempty"`
	Parent    *string `json:"parent,omitempty"`
	Size      *int64  `json:"size,omitempty"`
	Propagate bool    `json:"propagate,omitempty"`
}

// PlacementGroup is a PlacementGroupsList entry.
type PlacementGroup struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Disks []int  `json:"disks"`
}

// PlacementGroupUpdateDesc is the body of PlacementGroupUpdate.
type PlacementGroupUpdateDesc struct {
	Rename   *string `json:"rename,omitempty"`
	AddDisks []int   `json:"addDisks,omitempty"`
	RmDisks  []int   `json:"rmDisks,omitempty"`
}

// FaultSet is a FaultSetsList entry and the body of FaultSetUpdate.
type FaultSet struct {
	Name    string `json:"name,omitempty"`
	Servers []int  `json:"servers"`
}

// DiskRegisterDesc is the body of DiskRegister (keel extension).
type DiskRegisterDesc struct {
	ID               int    `json:"id"`
	ServerID         int    `json:"serverId"`
	Size             int64  `json:"size"`
	SSD              bool   `json:"ssd"`
	Model            string `json:"model"`
	Serial           string `json:"serial"`
	Device           string `json:"device"`
	ObjectsCount     int64  `json:"objectsCount"`
	ObjectsAllocated int64  `json:"objectsAllocated"`
	ObjectsFree      int64  `json:"objectsFree"`
	FreeBytes        int64  `json:"freeBytes"`
}

// DiskSummary is a DisksList entry (UpDiskSummary / DownDiskSummary).
type DiskSummary struct {
	ID               int    `json:"id"`
	ServerID         int    `json:"serverId"`
	SSD              bool   `json:"ssd"`
	GenerationLeft   int64  `json:"generationLeft"`
	Model            string `json:"model"`
	Serial           string `json:"serial"`
	Description      string `json:"description"`
	SoftEject        string `json:"softEject"`
	SectorsCount     int64  `json:"sectorsCount"`
	Empty            bool   `json:"empty"`
	NoFua            bool   `json:"noFua"`
	NoFlush          bool   `json:"noFlush"`
	NoTrim           bool   `json:"noTrim"`
	IsWbc            bool   `json:"isWbc"`
	Journaled        bool   `json:"journaled"`
	Device           string `json:"device"`
	EntriesCount     int64  `json:"entriesCount"`
	EntriesAllocated int64  `json:"entriesAllocated"`
	EntriesFree      int64  `json:"entriesFree"`
	ObjectsCount     int64  `json:"objectsCount"`
	ObjectsAllocated int64  `json:"objectsAllocated"`
	ObjectsFree      int64  `json:"objectsFree"`
	ObjectsOnDisk    int64  `json:"objectsOnDiskSize"`
	// keel extensions.
	Up             bool   `json:"up"`
	State          string `json:"state"`
	FreeBytes      int64  `json:"freeBytes"`
	Size           int64  `json:"size"`
	DiskGeneration int64  `json:"diskGeneration"`
	DiskScrub
}

// DiskDescUpdate is the body of DiskSetDescription.
type DiskDescUpdate struct {
	Description string `json:"description"`
}

// DiskMarkDownDesc is the body of DiskMarkDown (keel extension).
type DiskMarkDownDesc struct {
	Generation int64 `json:"generation"`
}

// ReassignDesc is one entry of VolumesReassign: a volume or a snapshot.
type ReassignDesc struct {
	Volume   string          `json:"volume,omitempty"`
	Snapshot string          `json:"snapshot,omitempty"`
	Detach   json.RawMessage `json:"detach,omitempty"`
	RO       []int           `json:"ro,omitempty"`
	RW       []int           `json:"rw,omitempty"`
	Force    bool            `json:"force,omitempty"`
}

// ReassignWaitDesc is the body of VolumesReassignWait.
type ReassignWaitDesc struct {
	Reassign      []ReassignDesc `json:"reassign"`
	AttachTimeout *int           `json:"attachTimeout,omitempty"`
}

// AttachmentDesc is an AttachmentsList entry.
type AttachmentDesc struct {
	Volume   string `json:"volume"`
	Snapshot bool   `json:"snapshot"`
	Client   int    `json:"client"`
	Rights   string `json:"rights"`
	Pos      int    `json:"pos"`
	// keel extensions.
	GlobalID     string `json:"globalId"`
	FencingToken int64  `json:"fencingToken"`
}

// HeartbeatDesc is the body of ServiceHeartbeat (keel extension).
type HeartbeatDesc struct {
	Type       string `json:"type"`
	ID         int    `json:"id"`
	NodeID     int    `json:"nodeId"`
	Version    string `json:"version"`
	StartTime  int64  `json:"startTime"`
	Addr       string `json:"addr"`
	Generation int64  `json:"generation"`
	// OpenVolumes (clients): globalIds of the exports that have
	// connections; detaching them needs force.
	OpenVolumes []string `json:"openVolumes,omitempty"`
}

// KVPair is a KV store entry and the body of KVSet.
type KVPair struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MgmtJoinDesc is the body of MgmtJoin (keel extension).
type MgmtJoinDesc struct {
	ID       int    `json:"id"`
	RaftAddr string `json:"raftAddr"`
	APIAddr  string `json:"apiAddr"`
}

// ClusterInitDesc is the first command of a new cluster.
type ClusterInitDesc struct {
	Name         string `json:"name"`
	Location     string `json:"location"`
	LocationID   string `json:"locationId"`
	SubClusterID string `json:"subClusterId"`
}

// NodeStopCheck is the reply of NodeStopCheck (keel extension).
type NodeStopCheck struct {
	Safe        bool   `json:"safe"`
	Reason      string `json:"reason"`
	Maintenance bool   `json:"maintenance"`
}

const (
	sectorSize      = 512
	maxNameLen      = 200
	maxKVKeyLen     = 200
	maxKVValueLen   = 64 << 10
	maxDiskSets     = 32768
	defaultObjSize  = 32 << 20
	maxDefaultSets  = 128
	maxDiskID       = 1<<32 - 3 // NO_DISK_ID is 2^32-2
	maxClientID     = 4095
	maxServerID     = 0x7fff
	maxReplication  = 3
	nameCharsetDesc = "letters, digits and _-.:"
)

var (
	volumeNameRE   = regexp.MustCompile(`^#?[A-Za-z0-9_\-.:]+$`)
	snapshotNameRE = regexp.MustCompile(`^\*?[A-Za-z0-9_\-.:@]+$`)
	globalIDRE     = regexp.MustCompile(`^~[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+$`)
	groupNameRE    = regexp.MustCompile(`^[A-Za-z0-9_\-]+$`)
	tagNameRE      = regexp.MustCompile(`^[A-Za-z0-9_\-.:]+$`)
	tagValueRE     = regexp.MustCompile(`^[A-Za-z0-9_\-.:]*$`)
	diskDescRE     = regexp.MustCompile(`^[A-Za-z0-9_\- ]{0,30}$`)
	idPartRE       = regexp.MustCompile(`^[a-z0-9]{1,8}$`)
)

// decodeStrict decodes a request body into v: unknown fields and trailing
// data are errors, and every error names the offending field.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			f := te.Field
			if f == "" {
				f = "(body)"
			}
			return invalidParam(f, "must be %s, not %s", jsonKind(te.Type.String()), te.Value)
		case errors.As(err, &se):
			return &Error{Name: ErrInvalidJSON, Descr: fmt.Sprintf("bad JSON at byte %d: %v", se.Offset, se)}
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return invalidParam(f, "unknown field")
		case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
			return &Error{Name: ErrInvalidJSON, Descr: "truncated JSON"}
		default:
			return &Error{Name: ErrInvalidParam, Descr: err.Error()}
		}
	}
	if dec.More() {
		return &Error{Name: ErrInvalidJSON, Descr: "trailing data after the JSON value"}
	}
	return nil
}

func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), goType == "mgmt.Limit":
		return "an integer"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map"):
		return "an object"
	default:
		return "an object"
	}
}

func checkVolumeName(field, name string, snapshot bool) error {
	re := volumeNameRE
	if snapshot {
		re = snapshotNameRE
	}
	switch {
	case name == "":
		return invalidParam(field, "is empty")
	case len(name) >= maxNameLen:
		return invalidParam(field, "is longer than %d characters", maxNameLen-1)
	case name == "list" || name == "status":
		return invalidParam(field, "%q is reserved", name)
	case !re.MatchString(name):
		return invalidParam(field, "%q may only hold %s", name, nameCharsetDesc)
	}
	return nil
}

// checkRef checks a name that may also be ~globalId.
func checkRef(field, ref string, snapshot bool) error {
	if strings.HasPrefix(ref, "~") {
		if !globalIDRE.MatchString(ref) {
			return invalidParam(field, "%q is not a ~globalId (~loc.sub.obj, lowercase base 36)", ref)
		}
		return nil
	}
	return checkVolumeName(field, ref, snapshot)
}

func checkGroupName(field, name string) error {
	if name == "" || len(name) >= 128 || !groupNameRE.MatchString(name) || name == "list" {
		return invalidParam(field, "%q is not a valid name (letters, digits, _ and -)", name)
	}
	return nil
}

func checkTags(tags map[string]string) error {
	for k, v := range tags {
		if k == "" || len(k) >= maxNameLen || !tagNameRE.MatchString(k) {
			return invalidParam("tags", "tag name %q is not valid", k)
		}
		if len(v) >= maxNameLen || !tagValueRE.MatchString(v) {
			return invalidParam("tags."+k, "tag value %q is not valid", v)
		}
	}
	return nil
}

func checkSize(field string, size int64) error {
	if size < sectorSize || size%sectorSize != 0 {
		return invalidParam(field, "%d must be a positive multiple of %d", size, sectorSize)
	}
	return nil
}

func (p *VolumePolicy) check() error {
	for _, g := range []struct {
		f string
		v *string
	}{{"placeAll", p.PlaceAll}, {"placeTail", p.PlaceTail}, {"placeHead", p.PlaceHead}} {
		if g.v != nil && *g.v != "" {
			if err := checkGroupName(g.f, *g.v); err != nil {
				return err
			}
		}
	}
	if p.Replication != nil && (*p.Replication < 1 || *p.Replication > maxReplication) {
		return invalidParam("replication", "%d is out of range 1..%d", *p.Replication, maxReplication)
	}
	return checkTags(p.Tags)
}

// DecodeRequest decodes and checks the body of a write call without
// looking at the cluster state: what the API refuses with 400 before
// proposing anything. It returns the decoded request.
func DecodeRequest(call string, body []byte) (any, error) {
	switch call {
	case "iSCSIConfig":
		return decodeISCSIChange(body)
	case "iSCSIReport":
		return decodeISCSIReport(body)
	case "VolumeCreate":
		var r VolumeCreateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Name != "" {
			if err := checkVolumeName("name", r.Name, false); err != nil {
				return nil, err
			}
		}
		if r.Size != nil {
			if err := checkSize("size", *r.Size); err != nil {
				return nil, err
			}
		}
		if r.Parent != "" {
			if err := checkRef("parent", r.Parent, true); err != nil {
				return nil, err
			}
		}
		if r.BaseOn != "" {
			if err := checkRef("baseOn", r.BaseOn, false); err != nil {
				return nil, err
			}
			if r.Parent != "" {
				return nil, invalidParam("baseOn", "cannot be given with parent")
			}
		}
		if r.DiskSets != 0 && (r.DiskSets < 1 || r.DiskSets > maxDiskSets || r.DiskSets&(r.DiskSets-1) != 0) {
			return nil, invalidParam("diskSets", "%d must be a power of two in 1..%d", r.DiskSets, maxDiskSets)
		}
		return &r, r.check()
	case "VolumeUpdate":
		var r VolumeUpdateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Rename != nil {
			if err := checkVolumeName("rename", *r.Rename, false); err != nil {
				return nil, err
			}
		}
		if r.Size != nil {
			if err := checkSize("size", *r.Size); err != nil {
				return nil, err
			}
		}
		if r.SizeAdd != nil {
			if err := checkSize("sizeAdd", *r.SizeAdd); err != nil {
				return nil, err
			}
		}
		return &r, r.check()
	case "VolumeSnapshot":
		var r VolumeSnapshotDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Name != "" {
			if err := checkVolumeName("name", r.Name, true); err != nil {
				return nil, err
			}
		}
		return &r, checkTags(r.Tags)
	case "SnapshotUpdate":
		var r SnapshotUpdateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Rename != nil {
			if err := checkVolumeName("rename", *r.Rename, true); err != nil {
				return nil, err
			}
		}
		return &r, r.check()
	case "VolumeRevert":
		var r VolumeRevertDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		return &r, checkRef("toSnapshot", r.ToSnapshot, true)
	case "VolumeTemplateCreate":
		var r TemplateCreateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if err := checkGroupName("name", r.Name); err != nil {
			return nil, err
		}
		if r.Size != nil {
			if err := checkSize("size", *r.Size); err != nil {
				return nil, err
			}
		}
		return &r, r.check()
	case "VolumeTemplateUpdate":
		var r TemplateUpdateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Rename != nil {
			if err := checkGroupName("rename", *r.Rename); err != nil {
				return nil, err
			}
		}
		if r.Size != nil {
			if err := checkSize("size", *r.Size); err != nil {
				return nil, err
			}
		}
		return &r, r.check()
	case "PlacementGroupUpdate":
		var r PlacementGroupUpdateDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Rename != nil {
			if err := checkGroupName("rename", *r.Rename); err != nil {
				return nil, err
			}
		}
		for _, d := range append(append([]int{}, r.AddDisks...), r.RmDisks...) {
			if d < 0 || d > maxDiskID {
				return nil, invalidParam("addDisks", "disk id %d is out of range 0..%d", d, maxDiskID)
			}
		}
		return &r, nil
	case "FaultSetUpdate":
		var r FaultSet
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		for _, s := range r.Servers {
			if s < 0 || s > maxServerID {
				return nil, invalidParam("servers", "server id %d is out of range", s)
			}
		}
		return &r, nil
	case "DiskRegister":
		var r DiskRegisterDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		switch {
		case r.ID < 0 || r.ID > maxDiskID:
			return nil, invalidParam("id", "%d is out of range 0..%d", r.ID, maxDiskID)
		case r.ServerID < 0 || r.ServerID > maxServerID:
			return nil, invalidParam("serverId", "%d is out of range 0..%d", r.ServerID, maxServerID)
		case r.Size <= 0:
			return nil, invalidParam("size", "must be positive")
		case r.FreeBytes < 0 || r.FreeBytes > r.Size:
			return nil, invalidParam("freeBytes", "%d is not within 0..size", r.FreeBytes)
		}
		return &r, nil
	case "DiskSetDescription":
		var r DiskDescUpdate
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if !diskDescRE.MatchString(r.Description) {
			return nil, invalidParam("description", "at most 30 letters, digits, spaces, _ and -")
		}
		return &r, nil
	case "DiskMarkDown":
		var r DiskMarkDownDesc
		return &r, decodeStrict(body, &r)
	case "DiskScrubReport":
		return decodeScrubReport(body)
	case "LayersDeleted":
		return decodeLayersDeleted(body)
	case "DiskRecoveryProgress", "DiskRecoveryDone":
		return decodeRecoveryCall(call, body)
	case "VolumesReassign":
		var r []ReassignDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		return r, checkReassign(r)
	case "VolumesReassignWait":
		var r ReassignWaitDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		return &r, checkReassign(r.Reassign)
	case "ServiceHeartbeat", "ServiceUpdate":
		var r HeartbeatDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		switch r.Type {
		case "server", "client", "bridge", "iscsi", "mgmt":
		default:
			return nil, invalidParam("type", "%q is not one of server, client, bridge, iscsi, mgmt", r.Type)
		}
		if r.ID < 0 || r.ID > maxServerID {
			return nil, invalidParam("id", "%d is out of range 0..%d", r.ID, maxServerID)
		}
		if r.NodeID < 0 || r.NodeID > 63 {
			return nil, invalidParam("nodeId", "%d is out of range 0..63", r.NodeID)
		}
		return &r, nil
	case "KVSet":
		var r KVPair
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.Key == "" || len(r.Key) > maxKVKeyLen {
			return nil, invalidParam("key", "must be 1..%d bytes", maxKVKeyLen)
		}
		if len(r.Value) > maxKVValueLen {
			return nil, invalidParam("value", "is longer than %d bytes", maxKVValueLen)
		}
		return &r, nil
	case "MgmtJoin":
		var r MgmtJoinDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if r.RaftAddr == "" {
			return nil, invalidParam("raftAddr", "is empty")
		}
		if r.APIAddr == "" {
			return nil, invalidParam("apiAddr", "is empty")
		}
		return &r, nil
	case "ClusterInit":
		var r ClusterInitDesc
		if err := decodeStrict(body, &r); err != nil {
			return nil, err
		}
		if !idPartRE.MatchString(r.LocationID) {
			return nil, invalidParam("locationId", "must be 1..8 lowercase base-36 characters")
		}
		if !idPartRE.MatchString(r.SubClusterID) {
			return nil, invalidParam("subClusterId", "must be 1..8 lowercase base-36 characters")
		}
		return &r, nil
	default:
		// Calls without a body: anything but an empty object is an error.
		var r struct{}
		return nil, decodeStrict(body, &r)
	}
}

func checkReassign(rs []ReassignDesc) error {
	for i, r := range rs {
		f := fmt.Sprintf("reassign[%d]", i)
		switch {
		case r.Volume != "" && r.Snapshot != "":
			return invalidParam(f, "give volume or snapshot, not both")
		case r.Volume != "":
			if err := checkRef(f+".volume", r.Volume, false); err != nil {
				return err
			}
		case r.Snapshot != "":
			if err := checkRef(f+".snapshot", r.Snapshot, true); err != nil {
				return err
			}
			if len(r.RW) > 0 {
				return invalidParam(f+".rw", "snapshots attach read-only")
			}
		default:
			return invalidParam(f, "names no volume or snapshot")
		}
		if _, _, err := parseDetach(r.Detach); err != nil {
			return invalidParam(f+".detach", "%v", err)
		}
		for _, c := range append(append([]int{}, r.RW...), r.RO...) {
			if c < 1 || c > maxClientID {
				return invalidParam(f, "client id %d is out of range 1..%d", c, maxClientID)
			}
		}
	}
	return nil
}

// parseDetach reads a detach list: a list of client ids or "all".
func parseDetach(raw json.RawMessage) (ids []int, all bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	if string(raw) == `"all"` {
		return nil, true, nil
	}
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, false, errors.New(`must be a list of client ids or "all"`)
	}
	return ids, false, nil
}
