package node

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the effective configuration of a node. Each section is a struct
// whose fields carry `toml` names and optional `min`/`max` (integers) and
// `enum` (strings, lists of strings) constraints; `help` documents the key.
// The schema is derived from these types, so adding a field is all it takes
// to add a key (and a default in defaults/).
type Config struct {
	Node       NodeConfig       `toml:"node"`
	Mgmt       MgmtConfig       `toml:"mgmt"`
	Server     ServerConfig     `toml:"server"`
	Client     ClientConfig     `toml:"client"`
	ISCSI      ISCSIConfig      `toml:"iscsi"`
	StorageNet StorageNetConfig `toml:"storage_net"`
	Services   ServicesConfig   `toml:"services"`

	origins map[string]Origin
}

// NodeConfig identifies this node and what it runs.
type NodeConfig struct {
	ID     int      `toml:"id" min:"0" max:"63" help:"node id, unique in the cluster; addresses on the storage network derive from it"`
	Name   string   `toml:"name" help:"node name shown in listings; empty means the host name"`
	Roles  []string `toml:"roles" enum:"mgmt,server,client,bridge,iscsi,nvmed,stat" help:"services this node runs"`
	RunDir string   `toml:"run_dir" help:"runtime directory for sockets and pid files"`
}

// DisplayName is the node's name: node.name, or the host name when unset.
func (n NodeConfig) DisplayName() string {
	if n.Name != "" {
		return n.Name
	}
	h, _ := os.Hostname()
	return h
}

// Origin says where an effective configuration value came from.
type Origin struct {
	Source string // "default", a file path, or "env"
	Line   int    // line in Source, 0 when not from a file
	Key    string // the environment variable, for env origins
}

func (o Origin) String() string {
	switch {
	case o.Key != "":
		return "env " + o.Key
	case o.Line > 0:
		return fmt.Sprintf("%s:%d", o.Source, o.Line)
	default:
		return o.Source
	}
}

// Paths of the configuration on an installed node.
const (
	DefaultConfigPath = "/etc/keel/keel.toml"
	envPrefix         = "KEEL_"
)

//go:embed defaults/*.toml
var defaultsFS embed.FS

var (
	// ErrConfig marks every configuration error; the message names the
	// file, line and key.
	ErrConfig = errors.New("invalid configuration")
)

// ConfigError is one problem in one place of the configuration.
type ConfigError struct {
	Origin Origin
	Key    string
	Msg    string
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return fmt.Sprintf("%s: %s", e.Origin, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.Origin, e.Key, e.Msg)
}

func (e *ConfigError) Unwrap() error { return ErrConfig }

// ConfigSources says where LoadConfig reads from. The zero value of a field
// means the installed default.
type ConfigSources struct {
	// Path is the main file; a missing file is an error only when it was
	// named explicitly (Explicit).
	Path     string
	Explicit bool
	// DropInDir holds *.toml files applied in name order after Path;
	// default: keel.d beside Path.
	DropInDir string
	// Hostname selects the [host."<name>"] sections; default os.Hostname.
	Hostname string
	// Environ is the environment to read KEEL_* keys from; nil means none.
	Environ []string
}

// LoadConfig builds the effective configuration: embedded defaults, the main
// file, the drop-in files in name order, the [host."<hostname>"] sections of
// those files in the same order, then KEEL_* environment variables.
func LoadConfig(src ConfigSources) (*Config, error) {
	if src.Path == "" {
		src.Path = DefaultConfigPath
	}
	if src.DropInDir == "" {
		src.DropInDir = filepath.Join(filepath.Dir(src.Path), "keel.d")
	}
	if src.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("load config: hostname: %w", err)
		}
		src.Hostname = h
	}
	c := &Config{origins: map[string]Origin{}}
	if err := c.applyDefaults(); err != nil {
		return nil, err
	}
	files, err := configFiles(src)
	if err != nil {
		return nil, err
	}
	var hosts []hostSection
	for _, f := range files {
		hs, err := c.applyFile(f, src.Hostname)
		if err != nil {
			return nil, err
		}
		hosts = append(hosts, hs...)
	}
	for _, h := range hosts {
		if err := c.apply(h.table, h.prefix, h.file); err != nil {
			return nil, err
		}
	}
	if err := c.applyEnv(src.Environ); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckConfigFile validates one configuration file on its own: syntax, keys,
// types and ranges, including every [host."..."] section in it.
func CheckConfigFile(path string) error {
	c := &Config{origins: map[string]Origin{}}
	hosts, err := c.applyFile(path, "")
	if err != nil {
		return err
	}
	for _, h := range hosts {
		if err := c.apply(h.table, h.prefix, h.file); err != nil {
			return err
		}
	}
	return nil
}

func configFiles(src ConfigSources) ([]string, error) {
	var files []string
	switch _, err := os.Stat(src.Path); {
	case err == nil:
		files = append(files, src.Path)
	case errors.Is(err, fs.ErrNotExist) && !src.Explicit:
	default:
		return nil, fmt.Errorf("load config: %w", err)
	}
	dropins, err := filepath.Glob(filepath.Join(src.DropInDir, "*.toml"))
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	sort.Strings(dropins)
	return append(files, dropins...), nil
}

func (c *Config) applyDefaults() error {
	names, err := fs.Glob(defaultsFS, "defaults/*.toml")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := defaultsFS.ReadFile(n)
		if err != nil {
			return err
		}
		var m map[string]any
		if _, err := toml.Decode(string(b), &m); err != nil {
			return fmt.Errorf("embedded %s: %w", n, err)
		}
		if err := c.apply(m, "", sourceText{name: "default"}); err != nil {
			return err
		}
	}
	return nil
}

// sourceText is one parsed source with the line of every key in it.
type sourceText struct {
	name  string
	lines map[string]int
}

func (s sourceText) origin(key string) Origin {
	return Origin{Source: s.name, Line: s.lines[key]}
}

type hostSection struct {
	table  map[string]any
	prefix string
	file   sourceText
}

// applyFile applies a file's own keys and returns its host sections: the one
// for hostname to be applied later, the others only to be validated.
func (c *Config) applyFile(path, hostname string) ([]hostSection, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	text := string(b)
	st := sourceText{name: path, lines: keyLines(text)}
	var m map[string]any
	if _, err := toml.Decode(text, &m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &ConfigError{Origin: Origin{Source: path, Line: pe.Position.Line}, Key: pe.LastKey, Msg: pe.Message}
		}
		return nil, &ConfigError{Origin: Origin{Source: path}, Msg: err.Error()}
	}
	var hosts []hostSection
	if h, ok := m["host"]; ok {
		delete(m, "host")
		ht, ok := h.(map[string]any)
		if !ok {
			return nil, &ConfigError{Origin: st.origin("host"), Key: "host", Msg: "must be a table of host names"}
		}
		names := make([]string, 0, len(ht))
		for n := range ht {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			t, ok := ht[n].(map[string]any)
			prefix := "host." + quoteKey(n)
			if !ok {
				return nil, &ConfigError{Origin: st.origin(prefix), Key: prefix, Msg: "must be a table"}
			}
			if n == hostname {
				hosts = append(hosts, hostSection{table: t, prefix: prefix, file: st})
				continue
			}
			// Another host's section: validate it against a scratch copy.
			if err := (&Config{origins: map[string]Origin{}}).apply(t, prefix, st); err != nil {
				return nil, err
			}
		}
	}
	return hosts, c.apply(m, "", st)
}

// apply sets every key of table m (found under textPrefix in the source
// text, e.g. host."n1") into c, checking it against the schema. Errors name
// the key as written in the source.
func (c *Config) apply(m map[string]any, textPrefix string, st sourceText) error {
	return c.applyTable(reflect.ValueOf(c).Elem(), m, "", textPrefix, st)
}

func (c *Config) applyTable(rv reflect.Value, m map[string]any, path, textPrefix string, st sourceText) error {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := schemaFields(rv.Type())
	for _, k := range keys {
		key := joinKey(path, k)
		textKey := joinKey(textPrefix, quoteKey(k))
		f, ok := fields[k]
		if !ok {
			return &ConfigError{Origin: st.origin(textKey), Key: textKey, Msg: "unknown key"}
		}
		fv := rv.FieldByIndex(f.Index)
		if isTable(f.Type) {
			sub, ok := m[k].(map[string]any)
			if !ok {
				return &ConfigError{Origin: st.origin(textKey), Key: textKey, Msg: fmt.Sprintf("must be a table, not %s", tomlType(m[k]))}
			}
			if err := c.applyTable(fv, sub, key, textKey, st); err != nil {
				return err
			}
			continue
		}
		o := st.origin(textKey)
		if err := setValue(fv, f, m[k]); err != nil {
			return &ConfigError{Origin: o, Key: textKey, Msg: err.Error()}
		}
		c.origins[key] = o
	}
	return nil
}

func (c *Config) applyEnv(environ []string) error {
	byName := map[string]leaf{}
	for _, l := range c.leaves() {
		byName[envName(l.key)] = l
	}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		l, ok := byName[name]
		if !ok {
			continue // KEEL_CONFIG, KEEL_JSON and the like belong to the command line
		}
		o := Origin{Source: "env", Key: name}
		if err := setValue(l.value, l.field, envValue(l.field.Type, val)); err != nil {
			return &ConfigError{Origin: o, Key: l.key, Msg: err.Error()}
		}
		c.origins[l.key] = o
	}
	return nil
}

// envName is the environment variable of a key: node.run_dir is
// KEEL_NODE_RUN_DIR.
func envName(key string) string {
	r := strings.NewReplacer(".", "_", "-", "_")
	return envPrefix + strings.ToUpper(r.Replace(key))
}

// Entry is one effective key, its value and where the value came from.
type Entry struct {
	Key    string `json:"key"`
	Value  any    `json:"value"`
	Origin string `json:"origin"`
	Help   string `json:"help,omitempty"`
}

// Entries lists every key of the schema with its effective value, in key
// order. A key no source set has origin "unset".
func (c *Config) Entries() []Entry {
	var out []Entry
	for _, l := range c.leaves() {
		o, ok := c.origins[l.key]
		origin := "unset"
		if ok {
			origin = o.String()
		}
		out = append(out, Entry{Key: l.key, Value: displayValue(l.value), Origin: origin, Help: l.field.Tag.Get("help")})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// OriginOf returns where the value of key came from.
func (c *Config) OriginOf(key string) (Origin, bool) {
	o, ok := c.origins[key]
	return o, ok
}
