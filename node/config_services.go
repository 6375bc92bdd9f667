package node

// ServicesConfig configures how keel_ctl finds and drives the node's systemd
// units ([services]).
type ServicesConfig struct {
	Timeout          Duration `toml:"timeout" min:"1s" max:"1h" help:"how long keel_ctl waits for each start, stop or restart job before calling it failed (--timeout overrides)"`
	JournalLines     int      `toml:"journal_lines" min:"0" max:"1000" help:"lines of a failed service's journal that keel_ctl prints"`
	StopCheckTimeout Duration `toml:"stop_check_timeout" min:"1s" max:"10m" help:"how long keel_ctl waits for mgmt to answer whether stopping this node's server is safe"`
}
