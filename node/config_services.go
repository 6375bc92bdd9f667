package node

// ServicesConfig configures how keel_ctl finds and drives the node's systemd units ([services]).
type ServicesConfig struct{}
