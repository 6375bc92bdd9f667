package applets

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"keel/mgmt/apiclient"
)

// apiClient returns a client of the management API from the configuration
// (mgmt.api_url, mgmt.token_file); -M selects the MultiCluster variant.
func apiClient(env *Env) (*apiclient.Client, error) {
	cfg, err := env.Config()
	if err != nil {
		return nil, err
	}
	tok, err := apiclient.ReadToken(cfg.Mgmt.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("%w (mgmt.token_file; run keel cluster init or copy the token from a mgmt node)", err)
	}
	c := apiclient.New(cfg.Mgmt.APIURL, tok)
	if multiCluster {
		c.Prefix = "MultiCluster/"
	}
	if remoteCluster != "" {
		c.Prefix = "RemoteCommand/" + remoteCluster + "/"
	}
	return c, nil
}

// multiCluster and remoteCluster are set from the CLI's -M flag and by
// `keel cluster cmd NAME` before the command runs.
var (
	multiCluster  bool
	remoteCluster string
)

// apiGet calls a read and decodes its data into out; with --json it
// prints the raw data instead and returns printed=true.
func apiGet(env *Env, call string, out any) (printed bool, err error) {
	c, err := apiClient(env)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(env.Ctx, 60*time.Second)
	defer cancel()
	var raw json.RawMessage
	if _, err := c.Get(ctx, call, nil, &raw); err != nil {
		return false, err
	}
	if env.Globals.JSON {
		return true, env.PrintJSON(raw)
	}
	return false, json.Unmarshal(raw, out)
}

// apiPost calls a write; with --json the reply's info is printed.
func apiPost(env *Env, call string, body any) (json.RawMessage, error) {
	c, err := apiClient(env)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(env.Ctx, 120*time.Second)
	defer cancel()
	var raw json.RawMessage
	if _, err := c.Post(ctx, call, body, &raw); err != nil {
		return nil, err
	}
	if env.Globals.JSON {
		if len(raw) == 0 {
			raw = json.RawMessage("null")
		}
		return raw, env.PrintJSON(map[string]any{"ok": true, "info": raw})
	}
	return raw, nil
}

// table writes aligned columns; the first row is the header.
func table(env *Env, rows [][]string) error {
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// Size is a byte count written like 10G, 512M, 4096 or 1.5T (powers of
// 1024).
type Size int64

// UnmarshalText parses a size.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := parseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

func parseSize(v string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(v))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if t != "" {
		switch t[len(t)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		case 'P':
			mult = 1 << 50
		}
		if mult > 1 {
			t = t[:len(t)-1]
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%q is not a size (like 10G, 512M, 4096)", v)
	}
	return int64(f * float64(mult)), nil
}

// humanSize prints bytes with a binary unit.
func humanSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	if f == float64(int64(f)) {
		return fmt.Sprintf("%d %s", int64(f), units[i])
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// confirmDelete checks --confirm against the name being deleted.
func confirmDelete(kind, name, confirm string) error {
	if confirm != name {
		return usageError("deleting %s %s needs --confirm %s (the name again)", kind, name, name)
	}
	return nil
}

// multiFlag is -M: kong calls AfterApply once the flag is parsed.
type multiFlag bool

// AfterApply records the flag for apiClient.
func (m multiFlag) AfterApply() error {
	multiCluster = bool(m)
	return nil
}

// jsonInto decodes a reply's info.
func jsonInto(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return nil
}
