package node

// ServerConfig configures the storage server: its disks and the data protocol listener ([server]).
type ServerConfig struct {
	Disks            []string `toml:"disks" help:"keel disks this node's server opens at start (block devices or files initialised with keel disk init); disks recorded by keel disk init are opened too"`
	Listen           string   `toml:"listen" help:"TCP address (host:port) the data protocol listens on; empty: none"`
	Socket           string   `toml:"socket" help:"unix socket of the data protocol for clients on this host; empty: none"`
	Concurrency      int      `toml:"concurrency" min:"1" max:"4096" help:"requests of one connection served at once"`
	DirectIO         bool     `toml:"direct_io" help:"read and write object data with O_DIRECT (bypassing this host's page cache) where the file system allows it"`
	DirectWritesFrom int      `toml:"direct_write_min" min:"0" max:"1048576" help:"with direct_io off, data writes of at least this many bytes still use O_DIRECT: copying a large write into the page cache costs more CPU than the device write, and evicts other data; reads and smaller writes stay cached, and writes of 64 KiB or less always do; at most 1 MiB (one allocation unit, the largest write to a disk); 0: none"`
	DiskTimeout      Duration `toml:"disk_timeout" min:"0s" max:"10m" help:"a disk I/O in flight for longer makes the server eject the disk; 0s: never"`
	CheckpointEvery  Duration `toml:"checkpoint_interval" min:"0s" max:"1h" help:"write each disk's changed metadata into the page cache this often, bounding what a crash of the server process (not of the host) loses: blocks written since read as checksum errors until recovered from a replica; costs no device wait; 0s: never"`
	FlushEvery       Duration `toml:"flush_interval" min:"0s" max:"1h" help:"flush each disk (data, then metadata, to the device) this often while it has changes, bounding what a crash of the host costs when clients do not flush: blocks written since read as checksum errors on this disk until recovered from a replica; each flush makes the kernel write back and the device flush its cache, which stalls I/O on a busy disk; 0s: only on clients' FLUSH and FUA"`
	ObjectSize       int      `toml:"object_size" min:"1048576" max:"1073741824" help:"object size in bytes written into disks by keel disk init (a multiple of 1 MiB)"`
	// Recovery of a disk that returns after being down.
	ScrubRateMB    int      `toml:"scrub_rate_mb" min:"1" max:"100000" help:"MiB per second a disk's scrub reads, low enough that client I/O keeps the disk"`
	RecoveryRateMB int      `toml:"recovery_rate_mb" min:"0" max:"100000" help:"MiB per second a disk's recovery may copy from its peers, so client I/O keeps flowing; 0: unlimited"`
	RecoverySettle Duration `toml:"recovery_settle" min:"1s" max:"1h" help:"how long recovery leaves a block that is newer on the returning disk than on its peer before taking it as stale (an unacknowledged write from before the disk went down); must exceed client.io_timeout"`
}
