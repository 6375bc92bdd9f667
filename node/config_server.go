package node

// ServerConfig configures the storage server: its disks and the data protocol listener ([server]).
type ServerConfig struct{}
