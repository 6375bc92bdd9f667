package node

// MgmtConfig configures the management service (Raft member and JSON API) and how other applets reach it ([mgmt]).
type MgmtConfig struct{}
