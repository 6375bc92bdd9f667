package apiclient

// LayersToDelete is the reply of the keel extension
// GET /ctrl/1.0/LayersToDelete/<serverId>: per disk of the server (by
// decimal id), the object namespaces ("layers", the Volume of an object
// id on the data path) whose objects it should delete, oldest first, at
// most MaxLayersToDelete in all.
type LayersToDelete struct {
	Disks map[string][]uint64 `json:"disks"`
}

// MaxLayersToDelete bounds one LayersToDelete reply.
const MaxLayersToDelete = 256

// LayersDeleted is the body of the keel extension POST
// /ctrl/1.0/LayersDeleted: the server deleted every object of these
// layers on the disk.
type LayersDeleted struct {
	Disk   int      `json:"disk"`
	Layers []uint64 `json:"layers"`
}
