package apiclient

// ClientVolumes is the reply of the keel extension
// GET /ctrl/1.0/ClientVolumes/<clientId>: everything a block client needs
// to serve its attachments, at one cluster generation.
type ClientVolumes struct {
	Generation int64          `json:"generation"`
	Volumes    []VolumeLayout `json:"volumes"`
	// Disks maps every disk the volumes use (by decimal id) to the
	// data-protocol address of its server and whether it is up.
	Disks map[string]DiskLocation `json:"disks"`
}

// VolumeLayout is one attachment of the client.
type VolumeLayout struct {
	Name     string `json:"name"` // "" for a volume addressed by globalId only
	GlobalID string `json:"globalId"`
	Snapshot bool   `json:"snapshot"`
	// Fence is the volume's stable id, the scope of Token.
	Fence uint64 `json:"fence"`
	// Layers are the object namespaces: the volume's own, then its
	// ancestors' (parent snapshot first).
	Layers     []uint64   `json:"layers"`
	Size       int64      `json:"size"`
	ObjectSize int64      `json:"objectSize"`
	DiskSets   [][]uint32 `json:"diskSets"`
	Token      uint64     `json:"token"`
	ReadOnly   bool       `json:"readOnly"`
	IOPS       int64      `json:"iops"`
	BW         int64      `json:"bw"` // bytes per second
}

// DiskLocation says where a disk is served.
type DiskLocation struct {
	Server uint32 `json:"server"`
	Addr   string `json:"addr"`
	// Up: the disk is up and its server running; it serves reads and
	// writes.
	Up bool `json:"up"`
	// Recovering: the disk is being brought up to date and its server is
	// running; writes go to it, reads do not.
	Recovering bool   `json:"recovering"`
	State      string `json:"state"` // up, recovering, down, ejected; "" unknown
	// GenerationLeft is the generation in which the disk last left the up
	// state (-1 while up).
	GenerationLeft int64 `json:"generationLeft"`
}

// Writable reports whether writes must reach the disk.
func (d DiskLocation) Writable() bool { return d.Up || d.Recovering }
