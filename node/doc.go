// Package node holds what every applet on a keel node shares: the
// configuration (embedded defaults overlaid by /etc/keel and KEEL_*
// variables), the node's SQLite state, logging, systemd readiness, the
// version stamp and atomic file writes. Applets receive these explicitly;
// nothing here runs at package init.
package node
