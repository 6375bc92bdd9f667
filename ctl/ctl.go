package ctl

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// Systemd is the part of go-systemd's D-Bus connection ctl uses;
// *dbus.Conn from dbus.NewSystemdConnectionContext implements it.
type Systemd interface {
	ListUnitFilesByPatternsContext(ctx context.Context, states, patterns []string) ([]sdbus.UnitFile, error)
	GetUnitPropertiesContext(ctx context.Context, unit string) (map[string]any, error)
	GetUnitTypePropertiesContext(ctx context.Context, unit, unitType string) (map[string]any, error)
	StartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	RestartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	EnableUnitFilesContext(ctx context.Context, files []string, runtime, force bool) (bool, []sdbus.EnableUnitFileChange, error)
	DisableUnitFilesContext(ctx context.Context, files []string, runtime bool) ([]sdbus.DisableUnitFileChange, error)
	ReloadContext(ctx context.Context) error
}

// Connect opens a private connection to systemd (/run/systemd/private; no
// D-Bus daemon is needed). Only root may use it.
func Connect(ctx context.Context) (*sdbus.Conn, error) {
	c, err := sdbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to systemd at /run/systemd/private (keel_ctl must run as root on a systemd host): %w", err)
	}
	return c, nil
}

// Verb is what keel_ctl is asked to do.
type Verb string

// The verbs of keel_ctl.
const (
	Status  Verb = "status"
	Start   Verb = "start"
	Stop    Verb = "stop"
	Restart Verb = "restart"
	Enable  Verb = "enable"
	Disable Verb = "disable"
)

// Controller drives the node's keel services.
type Controller struct {
	Systemd Systemd
	Log     *slog.Logger
	// Timeout bounds each start, stop or restart job.
	Timeout time.Duration
	// JournalLines is how many journal lines a failed service reports.
	JournalLines int
	// Journal returns the last lines of a unit's journal; nil shows none.
	Journal func(ctx context.Context, unit string, lines int) ([]string, error)
	// StopCheck asks mgmt whether this node's server may stop; nil means
	// mgmt cannot be asked (so the stop is refused unless Force).
	StopCheck func(ctx context.Context) (StopVerdict, error)
	// Force skips the stop safety check.
	Force bool
	// Now is the clock for uptimes; nil means time.Now.
	Now func() time.Time
}

// UnitStatus is what systemd says about one service's unit.
type UnitStatus struct {
	Load     string    `json:"load"`           // loaded, not-found, masked, error
	Active   string    `json:"active"`         // active, inactive, failed, activating, ...
	Sub      string    `json:"sub"`            // running, dead, exited, ...
	Enabled  string    `json:"enabled"`        // enabled, disabled, static, masked, ...
	MainPID  uint32    `json:"main_pid"`       // 0 when not running
	Since    time.Time `json:"since,omitzero"` // when it last became active; zero if never
	UptimeS  int64     `json:"uptime_s"`       // seconds active; 0 when not active
	LastExit string    `json:"last_exit"`
	Result   string    `json:"result"` // systemd's Result: success, exit-code, signal, timeout, ...
}

// Outcome is the result of one verb on one service.
type Outcome struct {
	Service
	Verb    Verb       `json:"verb"`
	OK      bool       `json:"ok"`
	Status  UnitStatus `json:"status"`
	Error   string     `json:"error,omitempty"`
	Journal []string   `json:"journal,omitempty"`
	// JournalNote says why no journal lines are shown for a failure.
	JournalNote string `json:"journal_note,omitempty"`
}

// Discover lists the keel services of this node: every keel_*.service unit
// file systemd finds in its unit paths, plus one per role the configuration
// gives the node (whose unit may be missing).
func Discover(ctx context.Context, sd Systemd, roles []string) ([]Service, error) {
	files, err := sd.ListUnitFilesByPatternsContext(ctx, nil, []string{unitPrefix + "*" + unitSuffix})
	if err != nil {
		return nil, fmt.Errorf("list keel unit files: %w", err)
	}
	var out []Service
	for _, f := range files {
		s, err := ParseService(filepath.Base(f.Path))
		if err != nil {
			continue // a template (keel_x@.service) or a stray name
		}
		out = append(out, s)
	}
	for _, r := range roles {
		s, err := ParseService(r)
		if err != nil {
			return nil, fmt.Errorf("config node.roles: %w", err)
		}
		out = append(out, s)
	}
	return StartOrder(out), nil
}

// Run applies verb to services (all of them, in the verb's order) and
// returns one outcome per service. The error is for what stopped the whole
// command: systemd unreachable, or the stop safety check refusing.
func (c *Controller) Run(ctx context.Context, verb Verb, svcs []Service) ([]Outcome, error) {
	order := StartOrder(svcs)
	if verb == Stop {
		order = StopOrder(svcs)
	}
	if verb == Stop || verb == Restart {
		if err := c.checkServerStop(ctx, order); err != nil {
			return nil, err
		}
	}
	var out []Outcome
	for _, s := range order {
		o := c.apply(ctx, verb, s)
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		out = append(out, o)
	}
	if verb == Enable || verb == Disable {
		// Enabling changes symlinks only; like systemctl, reload so that
		// systemd re-reads them and any unit file changed on disk (e.g. a
		// server unit installed when a client-only node became converged).
		if err := c.Systemd.ReloadContext(ctx); err != nil {
			return out, fmt.Errorf("reload systemd after %s: %w", verb, err)
		}
		for i := range out {
			c.checkEnabled(ctx, &out[i])
		}
	}
	return out, nil
}

// checkServerStop applies the safety rule: this node's server is stopped
// (or restarted) only when mgmt says no data would lose its last up copy,
// when the node is in maintenance, or when forced.
func (c *Controller) checkServerStop(ctx context.Context, order []Service) error {
	i := slices.IndexFunc(order, func(s Service) bool { return s.Role == "server" })
	if i < 0 {
		return nil
	}
	unit := order[i].Unit
	st, err := c.status(ctx, unit)
	if err != nil {
		return err
	}
	if st.Active == "inactive" || st.Active == "failed" {
		return nil // nothing to stop, nothing to lose
	}
	if c.Force {
		c.Log.Warn("stop safety check skipped (--force)", "unit", unit)
		return nil
	}
	if c.StopCheck == nil {
		return fmt.Errorf("%w %s: mgmt cannot be asked whether it is safe; use --force only if you know no data depends on this node", ErrStopRefused, unit)
	}
	v, err := c.StopCheck(ctx)
	if err != nil {
		return fmt.Errorf("%w %s: cannot ask mgmt whether it is safe (%s); use --force only if you know no data depends on this node", ErrStopRefused, unit, oneLine(err.Error()))
	}
	if v.Safe || v.Maintenance {
		return nil
	}
	reason := v.Reason
	if reason == "" {
		reason = "mgmt says it is not safe"
	}
	return fmt.Errorf("%w %s: %s; put the node in maintenance first, or use --force", ErrStopRefused, unit, oneLine(reason))
}

func (c *Controller) apply(ctx context.Context, verb Verb, s Service) Outcome {
	o := Outcome{Service: s, Verb: verb}
	st, err := c.status(ctx, s.Unit)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Status = st
	if st.Load != "loaded" {
		o.Error = notLoaded(st.Load)
		if verb == Stop || verb == Disable {
			// A service that is not installed is as stopped and disabled
			// as it gets; saying so is not a failure.
			o.OK = st.Active != "active" && st.Enabled != "enabled"
			if o.OK {
				o.Error = ""
			}
		}
		return o
	}
	switch verb {
	case Status:
		o.OK = st.Active == "active"
		if !o.OK {
			o.Error = "is " + stateText(st)
		}
		return o
	case Start, Stop, Restart:
		c.runJob(ctx, verb, &o)
	case Enable:
		has, _, err := c.Systemd.EnableUnitFilesContext(ctx, []string{s.Unit}, false, false)
		switch {
		case err != nil:
			o.Error = fmt.Sprintf("enable: %v", err)
		case !has:
			o.Error = "has no [Install] section, so it cannot be enabled"
		default:
			o.OK = true // confirmed by checkEnabled after the reload
		}
	case Disable:
		if _, err := c.Systemd.DisableUnitFilesContext(ctx, []string{s.Unit}, false); err != nil {
			o.Error = fmt.Sprintf("disable: %v", err)
		} else {
			o.OK = true
		}
	}
	return o
}

// checkEnabled confirms an enable or disable from the unit file state
// systemd reports after the reload.
func (c *Controller) checkEnabled(ctx context.Context, o *Outcome) {
	if !o.OK || o.Status.Load != "loaded" {
		return
	}
	st, err := c.status(ctx, o.Unit)
	if err != nil {
		o.OK, o.Error = false, err.Error()
		return
	}
	o.Status = st
	want := "enabled"
	if o.Verb == Disable {
		want = "disabled"
	}
	if st.Enabled != want {
		o.OK = false
		o.Error = fmt.Sprintf("is %s after %s, not %s", st.Enabled, o.Verb, want)
	}
}

// runJob queues a start, stop or restart job and waits for systemd's
// JobRemoved result within the timeout, then checks the unit's state: a
// job can be "done" for a service whose process died right after.
func (c *Controller) runJob(ctx context.Context, verb Verb, o *Outcome) {
	// Buffered: go-systemd delivers the result from its signal loop, which
	// must not block if we stopped waiting.
	ch := make(chan string, 1)
	var err error
	switch verb {
	case Start:
		_, err = c.Systemd.StartUnitContext(ctx, o.Unit, "replace", ch)
	case Stop:
		_, err = c.Systemd.StopUnitContext(ctx, o.Unit, "replace", ch)
	case Restart:
		_, err = c.Systemd.RestartUnitContext(ctx, o.Unit, "replace", ch)
	}
	if err != nil {
		o.Error = fmt.Sprintf("%s: %v", verb, err)
		return
	}
	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	var result string
	select {
	case result = <-ch:
	case <-timer.C:
		o.Error = fmt.Sprintf("%s: the job did not finish within %s (systemd keeps working on it; see keel_ctl status)", verb, c.Timeout)
	case <-ctx.Done():
		o.Error = fmt.Sprintf("%s: %v", verb, ctx.Err())
		return
	}
	st, serr := c.status(ctx, o.Unit)
	if serr != nil {
		o.Error = serr.Error()
		return
	}
	o.Status = st
	if o.Error != "" {
		c.addJournal(ctx, o)
		return
	}
	reached := st.Active == "active"
	if verb == Stop {
		reached = st.Active == "inactive" || st.Active == "failed"
	}
	switch {
	case result == "done" && reached:
		o.OK = true
		c.Log.Debug("job done", "verb", verb, "unit", o.Unit, "state", stateText(st))
		return
	case result == "done":
		o.Error = fmt.Sprintf("%s: the job finished but the unit is %s", verb, stateText(st))
	default:
		o.Error = fmt.Sprintf("%s: job %s; unit is %s", verb, result, stateText(st))
	}
	c.addJournal(ctx, o)
}

func (c *Controller) addJournal(ctx context.Context, o *Outcome) {
	if c.Journal == nil || c.JournalLines == 0 {
		return
	}
	lines, err := c.Journal(ctx, o.Unit, c.JournalLines)
	if err != nil {
		o.JournalNote = err.Error()
		return
	}
	o.Journal = lines
}

// StatusOf reports the unit of one service.
func (c *Controller) StatusOf(ctx context.Context, s Service) (UnitStatus, error) {
	return c.status(ctx, s.Unit)
}

func (c *Controller) status(ctx context.Context, unit string) (UnitStatus, error) {
	up, err := c.Systemd.GetUnitPropertiesContext(ctx, unit)
	if err != nil {
		return UnitStatus{}, fmt.Errorf("status of %s: %w", unit, err)
	}
	st := UnitStatus{
		Load:    str(up["LoadState"]),
		Active:  str(up["ActiveState"]),
		Sub:     str(up["SubState"]),
		Enabled: str(up["UnitFileState"]),
	}
	if st.Load != "loaded" {
		return st, nil
	}
	sp, err := c.Systemd.GetUnitTypePropertiesContext(ctx, unit, "Service")
	if err != nil {
		return UnitStatus{}, fmt.Errorf("status of %s: %w", unit, err)
	}
	st.MainPID, _ = sp["MainPID"].(uint32)
	st.Result = str(sp["Result"])
	code, _ := sp["ExecMainCode"].(int32)
	status, _ := sp["ExecMainStatus"].(int32)
	exited, _ := sp["ExecMainExitTimestamp"].(uint64)
	st.LastExit = exitText(code, status, exited)
	if us, _ := up["ActiveEnterTimestamp"].(uint64); us > 0 {
		st.Since = time.UnixMicro(int64(us))
		if st.Active == "active" || st.Active == "reloading" {
			now := time.Now
			if c.Now != nil {
				now = c.Now
			}
			st.UptimeS = int64(now().Sub(st.Since) / time.Second)
		}
	}
	return st, nil
}

// exitText describes how the main process last ended, from the siginfo
// code systemd keeps (CLD_EXITED, CLD_KILLED, CLD_DUMPED).
func exitText(code, status int32, exitedAt uint64) string {
	if exitedAt == 0 && code == 0 {
		return "-"
	}
	switch code {
	case 1:
		return fmt.Sprintf("exited %d", status)
	case 2:
		return fmt.Sprintf("killed by signal %d (%s)", status, syscall.Signal(status))
	case 3:
		return fmt.Sprintf("dumped core on signal %d (%s)", status, syscall.Signal(status))
	default:
		return "-"
	}
}

// notLoaded explains a unit systemd could not load. Outcome errors do not
// repeat the unit: it is printed (and in JSON given) beside them.
func notLoaded(load string) string {
	switch load {
	case "not-found", "":
		return fmt.Sprintf("%v: no unit file in systemd's unit paths (install keel's units, or remove the role from node.roles)", ErrNotInstalled)
	case "masked":
		return "is masked; unmask it before using it"
	default:
		return fmt.Sprintf("could not be loaded (load state %s); check the unit file", load)
	}
}

func stateText(st UnitStatus) string {
	if st.Sub == "" {
		return st.Active
	}
	return st.Active + "/" + st.Sub
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Failed reports whether any outcome did not reach the asked state.
func Failed(outs []Outcome) bool {
	return slices.ContainsFunc(outs, func(o Outcome) bool { return !o.OK })
}
