package apiclient

// DiskReplicas is the reply of the keel extension
// GET /ctrl/1.0/DiskReplicas/<diskId>: for every object namespace (layer)
// with objects placed on the disk, which disk sets hold them and the other
// disks of those sets. A storage server uses it to recover or scrub the
// disk from its peers.
type DiskReplicas struct {
	Generation     int64  `json:"generation"`
	Disk           uint32 `json:"disk"`
	State          string `json:"state"` // up, recovering, down, ejected
	DiskGeneration int64  `json:"diskGeneration"`
	// GenerationLeft is the cluster generation in which the disk last
	// left the up state (-1 while up). A set whose other disks are all
	// out too is recovered from the one that left last.
	GenerationLeft int64 `json:"generationLeft"`
	// RecoveryFrom is the generation in which the disk became recovering
	// (the transactionId of its recovery task; 0 when there is none).
	RecoveryFrom int64 `json:"recoveryFrom"`
	// ClientsReady: every running client with a read-write attachment has
	// reported a generation >= RecoveryFrom, so every write issued from now
	// on reaches the disk; recovery may start. WaitingClients lists the
	// ones that have not yet. Only the leader knows; the call is answered
	// there.
	ClientsReady   bool            `json:"clientsReady"`
	WaitingClients []int           `json:"waitingClients"`
	Layers         []LayerReplicas `json:"layers"`
	// Disks maps every peer disk (by decimal id) to where it is served
	// and its state.
	Disks map[string]DiskLocation `json:"disks"`
}

// LayerReplicas is one object namespace (a volume's or snapshot's layer)
// with objects on the disk. Object i of the layer lives on set
// i mod SetCount of the owning row's disk-set table.
type LayerReplicas struct {
	Layer    uint64 `json:"layer"`
	Volume   string `json:"volume"` // name, or ~globalId, for messages
	Snapshot bool   `json:"snapshot"`
	Objects  int64  `json:"objects"` // objects the volume's size spans
	SetCount int    `json:"setCount"`
	// Sets are the entries of the table that hold the disk.
	Sets []ReplicaSet `json:"sets"`
}

// ReplicaSet is one disk set holding the disk: its index in the table and
// its other disks (placeTail last, as in the table).
type ReplicaSet struct {
	Index int      `json:"index"`
	Peers []uint32 `json:"peers"`
}

// DiskRecoveryProgress is the body of the keel extension
// POST /ctrl/1.0/DiskRecoveryProgress/<diskId>.
type DiskRecoveryProgress struct {
	DiskGeneration int64 `json:"diskGeneration"`
	All            int64 `json:"all"`
	Done           int64 `json:"done"`
	Dispatched     int64 `json:"dispatched"`
}

// DiskRecoveryDone is the body of the keel extension
// POST /ctrl/1.0/DiskRecoveryDone/<diskId>: the recovery of that disk
// generation copied what its peers had; mgmt marks the disk up.
type DiskRecoveryDone struct {
	DiskGeneration int64          `json:"diskGeneration"`
	Stats          map[string]any `json:"stats"`
}

// Task is one entry of TasksList.
type Task struct {
	DiskID            int64 `json:"diskId"`
	TransactionID     int64 `json:"transactionId"`
	AllObjects        int64 `json:"allObjects"`
	CompletedObjects  int64 `json:"completedObjects"`
	DispatchedObjects int64 `json:"dispatchedObjects"`
}
