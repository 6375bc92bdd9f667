package applets

// DiskCmd groups the disk commands. Node-local commands (init, list-local)
// are in cli_disk_local.go; cluster-side ones talk to mgmt.
type DiskCmd struct {
	Init      DiskInitCmd      `cmd:"" help:"Write a keel superblock on a block device or file so the server can use it."`
	ListLocal DiskListLocalCmd `cmd:"" name:"list-local" help:"List the keel disks this node can see and their state."`
}
