package node

// ClientConfig configures the block client: NBD exports and device links ([client]).
type ClientConfig struct{}
