package applets

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"keel/mgmt/apiclient"
	"keel/node"
)

// TaskCmd groups the task commands.
type TaskCmd struct {
	List TaskListCmd `cmd:"" help:"List the running recovery tasks; --wait follows them until none remain."`
}

// TaskListCmd is `keel task list`.
type TaskListCmd struct {
	Wait     bool          `help:"Follow the tasks until none remains: a progress bar per task on a terminal, a line per change otherwise."`
	Interval time.Duration `default:"1s" help:"How often --wait asks mgmt."`
}

// Help is the long help of `keel task list`.
func (c *TaskListCmd) Help() string {
	return `Shows TasksList: one recovery task per disk that came back after being
down and is being brought up to date from its peers. TRANSACTION is the
cluster generation in which the disk became recovering; DONE and ALL count
the objects its server has compared (and copied where they changed),
DISPATCHED those it has started. A task disappears when mgmt marks its
disk up again.

With --wait the command follows the tasks until none remains and then
exits 0: on a terminal it redraws a progress bar per task, otherwise (a
pipe, a log) it prints one line whenever a task's counts change, and
"no tasks" at the end. --json prints TasksList's data (with --wait, one
JSON document per poll).

Examples:
  keel task list
  keel task list --wait
  keel task list --json`
}

// Run lists, or follows with --wait.
func (c *TaskListCmd) Run(env *Env) error {
	if !c.Wait {
		var list []apiclient.Task
		printed, err := apiGet(env, "TasksList", &list)
		if err != nil || printed {
			return err
		}
		if len(list) == 0 {
			fmt.Fprintln(env.Stdout, "no tasks")
			return nil
		}
		rows := [][]string{{"DISK", "TRANSACTION", "DONE", "DISPATCHED", "ALL"}}
		for _, t := range list {
			rows = append(rows, []string{fmt.Sprint(t.DiskID), fmt.Sprint(t.TransactionID), fmt.Sprint(t.CompletedObjects),
				fmt.Sprint(t.DispatchedObjects), fmt.Sprint(t.AllObjects)})
		}
		return table(env, rows)
	}
	api, err := apiClient(env)
	if err != nil {
		return err
	}
	f, _ := env.Stdout.(*os.File)
	tty := f != nil && node.IsTerminal(f) && !env.Globals.JSON
	last := map[int64]apiclient.Task{}
	drawn := 0
	for {
		var list []apiclient.Task
		if _, err := api.Get(env.Ctx, "TasksList", nil, &list); err != nil {
			return fmt.Errorf("task list: %w", err)
		}
		switch {
		case env.Globals.JSON:
			if err := env.PrintJSON(list); err != nil {
				return err
			}
		case tty:
			drawn = drawTasks(env.Stdout, list, drawn)
		default:
			now := map[int64]apiclient.Task{}
			for _, t := range list {
				now[t.DiskID] = t
				if last[t.DiskID] != t {
					fmt.Fprintf(env.Stdout, "disk %d: recovery %d/%d objects (%d dispatched, transaction %d)\n",
						t.DiskID, t.CompletedObjects, t.AllObjects, t.DispatchedObjects, t.TransactionID)
				}
			}
			for d := range last {
				if _, ok := now[d]; !ok {
					fmt.Fprintf(env.Stdout, "disk %d: recovery done\n", d)
				}
			}
			last = now
		}
		if len(list) == 0 {
			if !env.Globals.JSON {
				fmt.Fprintln(env.Stdout, "no tasks")
			}
			return nil
		}
		select {
		case <-env.Ctx.Done():
			return env.Ctx.Err()
		case <-time.After(c.Interval):
		}
	}
}

// drawTasks redraws one progress bar per task over the previous drawing
// of drawn lines and returns how many lines it drew.
func drawTasks(w io.Writer, list []apiclient.Task, drawn int) int {
	if drawn > 0 {
		fmt.Fprintf(w, "\x1b[%dA", drawn)
	}
	for _, t := range list {
		frac := 0.0
		if t.AllObjects > 0 {
			frac = float64(t.CompletedObjects) / float64(t.AllObjects)
		}
		const width = 30
		n := int(frac * width)
		fmt.Fprintf(w, "\x1b[2Kdisk %-5d [%s%s] %3.0f%% %d/%d objects\n", t.DiskID, strings.Repeat("#", n), strings.Repeat(".", width-n),
			100*frac, t.CompletedObjects, t.AllObjects)
	}
	for i := len(list); i < drawn; i++ {
		fmt.Fprint(w, "\x1b[2K\n")
	}
	return max(drawn, len(list))
}
