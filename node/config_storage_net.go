package node

// StorageNetConfig configures the storage network that iface-genconf configures ([storage_net]).
type StorageNetConfig struct{}
