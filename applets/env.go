package applets

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"keel/node"
)

// Globals are the flags every applet takes.
type Globals struct {
	Config   string `name:"config" short:"c" default:"/etc/keel/keel.toml" env:"KEEL_CONFIG" placeholder:"FILE" help:"Configuration file (default /etc/keel/keel.toml). Drop-ins in keel.d/ beside it are applied after it, in name order."`
	StateDir string `name:"state-dir" default:"/var/lib/keel" env:"KEEL_STATE_DIR" placeholder:"DIR" help:"Directory of the node's state database (default /var/lib/keel)."`
	LogLevel string `name:"log-level" default:"info" enum:"debug,info,warn,error" env:"KEEL_LOG_LEVEL" help:"Least severe log messages to print: debug, info, warn or error."`
	JSON     bool   `name:"json" env:"KEEL_JSON" help:"Print machine-readable JSON instead of tables."`
}

func (g *Globals) globals() *Globals { return g }

type hasGlobals interface{ globals() *Globals }

// Env is what a Run method receives: the parsed globals, the output
// streams, a logger and lazily opened config and state. An applet that never
// asks for state never opens the database.
type Env struct {
	Ctx     context.Context
	Name    string // the name the applet was started under
	Globals *Globals
	Stdout  io.Writer
	Stderr  io.Writer
	Log     *slog.Logger

	cfg   *node.Config
	state *node.State
}

// Config loads the effective configuration on first use.
func (e *Env) Config() (*node.Config, error) {
	if e.cfg != nil {
		return e.cfg, nil
	}
	cfg, err := node.LoadConfig(node.ConfigSources{
		Path:     e.Globals.Config,
		Explicit: e.Globals.Config != node.DefaultConfigPath,
		Environ:  os.Environ(),
	})
	if err != nil {
		return nil, err
	}
	e.cfg = cfg
	return cfg, nil
}

// State opens the node state database on first use.
func (e *Env) State() (*node.State, error) {
	if e.state != nil {
		return e.state, nil
	}
	st, err := node.OpenState(e.Ctx, e.Globals.StateDir)
	if err != nil {
		return nil, err
	}
	e.state = st
	return st, nil
}

// PrintJSON writes v as indented JSON to stdout.
func (e *Env) PrintJSON(v any) error {
	enc := json.NewEncoder(e.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (e *Env) close() {
	if e.state != nil {
		e.state.Close()
	}
}

// exitRequest is how kong's help and version flags stop parsing: kong calls
// its Exit hook, which panics with this, and runApplet recovers it.
type exitRequest int

// runApplet parses args into cli (a struct embedding Globals), runs the
// selected command's Run(*Env) and returns the exit code. Parse errors exit
// 2 with one line naming the problem; Run errors exit 1 unless they carry an
// ExitError code.
func runApplet(name, description string, cli hasGlobals, args []string, opts ...kong.Option) (code int) {
	stdout, stderr := io.Writer(os.Stdout), io.Writer(os.Stderr)
	defer func() {
		if r := recover(); r != nil {
			req, ok := r.(exitRequest)
			if !ok {
				panic(r)
			}
			code = int(req)
		}
	}()
	parser, err := kong.New(cli, append([]kong.Option{
		kong.Name(name),
		kong.Description(description),
		kong.Writers(stdout, stderr),
		kong.Exit(func(c int) { panic(exitRequest(c)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true, Summary: true, WrapUpperBound: 100}),
	}, opts...)...)
	if err != nil {
		panic(err) // a malformed command struct is a build defect
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, err)
		var pe *kong.ParseError
		if errors.As(err, &pe) {
			fmt.Fprintf(stderr, "run '%s --help' for usage\n", strings.Join(commandPath(name, pe.Context), " "))
		}
		return 2
	}
	g := cli.globals()
	level, err := node.ParseLogLevel(g.LogLevel)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &Env{Ctx: ctx, Name: name, Globals: g, Stdout: stdout, Stderr: stderr,
		Log: node.NewLogger(os.Stderr, level, false)}
	defer env.close()
	err = kctx.Run(env)
	if err != nil {
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", name, err)
		}
	}
	return exitCode(err)
}

// hasCommand reports whether word is a top-level command of the command
// struct cli, as kong sees it.
func hasCommand(cli any, word string) bool {
	parser, err := kong.New(cli)
	if err != nil {
		panic(err)
	}
	for _, n := range parser.Model.Children {
		if n.Name == word || slices.Contains(n.Aliases, word) {
			return true
		}
	}
	return word == "help"
}

// commandPath names the command a parse error happened in, for the hint.
func commandPath(name string, ctx *kong.Context) []string {
	out := []string{name}
	if ctx == nil {
		return out
	}
	if sel := ctx.Selected(); sel != nil {
		out = append(out, strings.Fields(sel.FullPath())[1:]...)
	}
	return out
}
