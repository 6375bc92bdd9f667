// Package integration tests the built keel binary as an operator runs it:
// dispatch by argv[0], the config and state commands, install-links, and the
// guards that keep the binary static and the package layering honest.
// Subsystems with their own processes test them in their own packages.
package integration
