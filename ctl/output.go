package ctl

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// pastTense names what a verb did, for the one-line report of a success.
var pastTense = map[Verb]string{
	Start: "started", Stop: "stopped", Restart: "restarted",
	Enable: "enabled", Disable: "disabled", Status: "is",
}

// WriteStatus prints one row per service: unit, active/sub state, enabled
// state, main PID, uptime and how its main process last exited.
func WriteStatus(w io.Writer, outs []Outcome) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UNIT\tSTATE\tENABLED\tPID\tUPTIME\tLAST EXIT")
	for _, o := range outs {
		st := o.Status
		state := stateText(st)
		if st.Load != "loaded" {
			state = st.Load
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", o.Unit, state, dash(st.Enabled), pid(st.MainPID),
			uptime(st), dash(st.LastExit))
	}
	return tw.Flush()
}

// WriteOutcomes prints what a verb did: one line per success on w (unless
// batch), and on errw every failure with the last lines of its journal.
func WriteOutcomes(w, errw io.Writer, outs []Outcome, batch bool) {
	for _, o := range outs {
		if o.OK {
			if !batch && o.Verb != Status {
				fmt.Fprintf(w, "%s: %s (%s, %s)\n", o.Unit, pastTense[o.Verb], stateText(o.Status), dash(o.Status.Enabled))
			}
			continue
		}
		fmt.Fprintf(errw, "%s: %s\n", o.Unit, o.Error)
		if o.Status.LastExit != "" && o.Status.LastExit != "-" && o.Verb != Status {
			fmt.Fprintf(errw, "  last exit: %s (result %s)\n", o.Status.LastExit, dash(o.Status.Result))
		}
		if len(o.Journal) > 0 {
			fmt.Fprintf(errw, "  last %d journal lines:\n", len(o.Journal))
			for _, l := range o.Journal {
				fmt.Fprintf(errw, "    %s\n", l)
			}
		}
		if o.JournalNote != "" {
			fmt.Fprintf(errw, "  %s\n", o.JournalNote)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func pid(p uint32) string {
	if p == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(p), 10)
}

// uptime prints how long a service has been active, to the second, in the
// largest two units (2d3h, 3h12m, 5m10s, 12s).
func uptime(st UnitStatus) string {
	if st.Active != "active" || st.Since.IsZero() {
		return "-"
	}
	d := time.Duration(st.UptimeS) * time.Second
	days := d / (24 * time.Hour)
	h := (d % (24 * time.Hour)) / time.Hour
	m := (d % time.Hour) / time.Minute
	s := (d % time.Minute) / time.Second
	switch {
	case days > 0:
		return fmt.Sprintf("%dd%dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh%dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm%ds", m, s)
	default:
		return fmt.Sprintf("%ds", s)
	}
}
