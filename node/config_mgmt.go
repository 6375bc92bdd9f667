package node

// MgmtConfig configures the management service (Raft member and JSON API)
// and how other applets reach it ([mgmt]).
type MgmtConfig struct {
	APIURL            string   `toml:"api_url" help:"base URL of the management API that applets and the CLI call; a comma-separated list of every mgmt node lets them move on when one is down"`
	TokenFile         string   `toml:"token_file" help:"file holding the API token (created 0600 by keel cluster init)"`
	ClusterSecretFile string   `toml:"cluster_secret_file" help:"file holding the cluster secret (hex, 0600): HMAC key of the Raft transport and the data-path handshake; written by keel cluster init/join"`
	Listen            string   `toml:"listen" help:"address the management API listens on (host:port)"`
	RaftAddr          string   `toml:"raft_addr" help:"address of this node's Raft transport (host:port), also what other mgmt nodes dial"`
	APIAdvertise      string   `toml:"api_advertise" help:"API URL other mgmt nodes use to forward writes here; empty means http://<listen>"`
	SnapshotThreshold int      `toml:"snapshot_threshold" min:"16" help:"Raft log entries between store snapshots (log compaction)"`
	TrailingLogs      int      `toml:"trailing_logs" min:"0" help:"Raft log entries kept after a snapshot, for followers that lag a little"`
	SnapshotInterval  Duration `toml:"snapshot_interval" min:"1s" help:"how often Raft checks whether a snapshot is due"`
	HeartbeatInterval Duration `toml:"heartbeat_interval" min:"100ms" help:"how often services send ServiceHeartbeat"`
	ServiceTimeout    Duration `toml:"service_timeout" min:"1s" help:"a service not heard from for this long is down (a server's disks are then marked down)"`
	ClientWriteGrace  Duration `toml:"client_write_grace" min:"1s" help:"how long after a client's last heartbeat mgmt takes it to have stopped writing: a recovery or a snapshot that waits for a client it no longer hears waits this long; must exceed client.mgmt_lease + client.io_timeout"`
	ReuseServer       bool     `toml:"reuse_server_implicit" help:"allow two replicas on one server when a server is down and there are too few otherwise (volumes are flagged)"`
}
