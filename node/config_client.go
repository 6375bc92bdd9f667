package node

// ClientConfig configures the block client: NBD exports and device links
// ([client]).
type ClientConfig struct {
	NBDListen    string   `toml:"nbd_listen" help:"also serve every attached volume by name on this TCP address (loopback only, e.g. 127.0.0.1:10809); empty: unix sockets only"`
	DevDir       string   `toml:"dev_dir" help:"directory under which keel/<name> and keel-byid/<globalId> link to what serves each volume"`
	PollInterval Duration `toml:"poll_interval" min:"50ms" help:"how often the client asks mgmt for its attachments (attach and snapshot latency)"`
	IOTimeout    Duration `toml:"io_timeout" min:"100ms" help:"a replica that does not answer a request within this is reported to mgmt as down"`
	MgmtLease    Duration `toml:"mgmt_lease" min:"1s" help:"writes wait while the client has not synced with mgmt for this long, so that a client cut off from mgmt stops writing before mgmt gives up on it (keep mgmt_lease + io_timeout below mgmt.client_write_grace)"`
	Connections  int      `toml:"connections" min:"1" max:"64" help:"data-protocol connections per storage server (the common reads and writes of one NBD connection share one)"`
}
