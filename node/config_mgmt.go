package node

// MgmtConfig configures the management service (Raft member and JSON API)
// and how other applets reach it ([mgmt]).
type MgmtConfig struct {
	APIURL    string `toml:"api_url" help:"base URL of the management API that applets and the CLI call"`
	TokenFile string `toml:"token_file" help:"file holding the API token (created 0600 by keel cluster init)"`
}
