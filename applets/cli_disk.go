package applets

// DiskCmd groups the disk commands. Node-local commands (init, list-local)
// are in cli_disk_local.go; cluster-side ones talk to mgmt.
type DiskCmd struct {
	Init      DiskInitCmd      `cmd:"" help:"Write a keel superblock on a block device or file so the server can use it."`
	ListLocal DiskListLocalCmd `cmd:"" name:"list-local" help:"List the keel disks this node can see and their state."`

	// Cluster-side disk commands (mgmt API), in cli_disk_api.go.
	List           DiskListCmd           `cmd:"" help:"List the cluster's disks as mgmt knows them."`
	Describe       DiskDescribeCmd       `cmd:"" help:"Show one disk."`
	Eject          DiskEjectCmd          `cmd:"" help:"Eject a disk: it stops serving and its data is recovered elsewhere."`
	Forget         DiskForgetCmd         `cmd:"" help:"Remove an ejected or down disk from the cluster."`
	SetDescription DiskSetDescriptionCmd `cmd:"" name:"set-description" help:"Set a disk's description."`
	Scrub          DiskScrubCmd          `cmd:"" help:"Start, pause or continue scrubbing a disk (verify every block, repair from replicas)."`
}
