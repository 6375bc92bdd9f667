package applets

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"keel/mgmt"
)

// DiskListCmd is `keel disk list`.
type DiskListCmd struct{}

// Help is the long help of `keel disk list`.
func (c *DiskListCmd) Help() string {
	return `Lists the cluster's disks as mgmt knows them (DisksList): id, server,
state (up, down, ejected), size, free space, objects, model, serial,
description, and scrubbing (the job's state and progress, checksum errors
found / repaired, "-" when never scrubbed). "keel disk list-local" lists
the disks this node can see.`
}

// Run lists.
func (c *DiskListCmd) Run(env *Env) error {
	var disks map[string]mgmt.DiskSummary
	printed, err := apiGet(env, "DisksList", &disks)
	if err != nil || printed {
		return err
	}
	list := make([]mgmt.DiskSummary, 0, len(disks))
	for _, d := range disks {
		list = append(list, d)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	rows := [][]string{{"ID", "SERVER", "STATE", "SIZE", "FREE", "OBJECTS", "MODEL", "SERIAL", "DESCRIPTION", "SCRUB"}}
	for _, d := range list {
		rows = append(rows, []string{itoa(d.ID), itoa(d.ServerID), d.State, humanSize(d.Size), humanSize(d.FreeBytes),
			fmt.Sprintf("%d/%d", d.ObjectsAllocated, d.ObjectsCount), dash(d.Model), dash(d.Serial), dash(d.Description), scrubShort(d.DiskScrub)})
	}
	return table(env, rows)
}

// DiskDescribeCmd is `keel disk describe`.
type DiskDescribeCmd struct {
	ID int `arg:"" name:"ID" help:"Disk id."`
}

// Help is the long help of `keel disk describe`.
func (c *DiskDescribeCmd) Help() string {
	return `Shows one disk (DiskDescribe), including its disk generation (raised each
time it comes back up) and the cluster generation it left at when down.`
}

// Run describes.
func (c *DiskDescribeCmd) Run(env *Env) error {
	var d mgmt.DiskSummary
	printed, err := apiGet(env, "DiskDescribe/"+strconv.Itoa(c.ID), &d)
	if err != nil || printed {
		return err
	}
	return table(env, [][]string{{"id", itoa(d.ID)}, {"server", itoa(d.ServerID)}, {"state", d.State},
		{"size", humanSize(d.Size)}, {"free", humanSize(d.FreeBytes)}, {"ssd", fmt.Sprint(d.SSD)}, {"device", dash(d.Device)},
		{"model", dash(d.Model)}, {"serial", dash(d.Serial)}, {"description", dash(d.Description)},
		{"objects", fmt.Sprintf("%d allocated, %d free of %d", d.ObjectsAllocated, d.ObjectsFree, d.ObjectsCount)},
		{"disk generation", fmt.Sprint(d.DiskGeneration)}, {"generation left", fmt.Sprint(d.GenerationLeft)},
		{"scrub", scrubShort(d.DiskScrub)}, {"scrub job", fmt.Sprint(d.ScrubJob)},
		{"scrubbed", fmt.Sprintf("%s of %s, %d blocks, %s/s", humanSize(d.ScrubbedBytes), humanSize(d.ScrubTotalBytes), d.ScrubBlocks, humanSize(d.ScrubbingBW))},
		{"scrub errors", fmt.Sprintf("%d found, %d repaired, %d unrepairable (%d in all jobs)", d.ScrubErrors, d.ScrubRepaired, d.ScrubUnrepairable, d.TotalErrorsDetected)},
		{"scrub position", fmt.Sprintf("slot %d AU %d", d.ScrubPosition.Slot, d.ScrubPosition.AU)},
		{"last scrub completed", scrubTime(d.LastScrubCompleted)}})
}

// scrubShort is the scrub column of disk list: the job's state, progress
// and errors.
func scrubShort(s mgmt.DiskScrub) string {
	if s.ScrubJob == 0 {
		return "-"
	}
	state := s.ScrubState
	switch {
	case s.Scrubbing && s.ScrubbingPaused:
		state = "paused"
	case s.Scrubbing && state == "":
		state = "starting"
	case s.Scrubbing:
		state = "running"
	}
	if s.Scrubbing && s.ScrubTotalBytes > 0 {
		state += fmt.Sprintf(" %d%%", min(100, 100*s.ScrubbedBytes/s.ScrubTotalBytes))
	}
	if s.ScrubErrors > 0 {
		state += fmt.Sprintf(", %d err %d fixed", s.ScrubErrors, s.ScrubRepaired)
		if s.ScrubUnrepairable > 0 {
			state += fmt.Sprintf(" %d LOST", s.ScrubUnrepairable)
		}
	}
	return state
}

func scrubTime(unix int64) string {
	if unix == 0 {
		return "never"
	}
	return time.Unix(unix, 0).UTC().Format(time.RFC3339)
}

// DiskScrubCmd is `keel disk scrub`.
type DiskScrubCmd struct {
	ID     int    `arg:"" name:"ID" help:"Disk id."`
	Action string `arg:"" name:"ACTION" enum:"start,pause,continue" help:"start, pause or continue."`
	Wait   bool   `help:"After start or continue, wait until the job has finished and show its counts."`
}

// Help is the long help of `keel disk scrub`.
func (c *DiskScrubCmd) Help() string {
	return `Scrubbing reads every data block of the disk, verifies its checksum, and
rewrites a bad block from a good replica (DiskScrubStart, DiskScrubPause,
DiskScrubContinue). The disk's server follows within a heartbeat interval
and reads at most server.scrub_rate_mb (64 MiB/s by default). "start" begins a job unless one is unfinished;
a job started while scrubbing is paused starts paused. "pause" keeps the
job's position; "continue" goes on from it. Progress and counts (errors
found, repaired, unrepairable) are in "keel disk list" / "keel disk
describe ID"; an unrepairable block is also logged by the server as an
error.

Examples:
  keel disk scrub 101 start --wait
  keel disk scrub 101 pause`
}

// Run sends the call and, with --wait, follows the job.
func (c *DiskScrubCmd) Run(env *Env) error {
	call := map[string]string{"start": "DiskScrubStart", "pause": "DiskScrubPause", "continue": "DiskScrubContinue"}[c.Action]
	done := map[string]string{"start": "scrub of disk %d started", "pause": "scrub of disk %d paused", "continue": "scrub of disk %d continues"}[c.Action]
	if err := diskPost(env, fmt.Sprintf("%s/%d", call, c.ID), nil, fmt.Sprintf(done, c.ID)); err != nil || !c.Wait || c.Action == "pause" {
		return err
	}
	api, err := apiClient(env)
	if err != nil {
		return err
	}
	for {
		var d mgmt.DiskSummary
		if _, err := api.Get(env.Ctx, fmt.Sprintf("DiskDescribe/%d", c.ID), nil, &d); err != nil {
			return err
		}
		if !d.Scrubbing {
			if env.Globals.JSON {
				if err := env.PrintJSON(d.DiskScrub); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Stdout, "disk %d scrub job %d %s: %s scrubbed, %d blocks, %d errors, %d repaired, %d unrepairable\n",
					c.ID, d.ScrubJob, dash(d.ScrubState), humanSize(d.ScrubbedBytes), d.ScrubBlocks, d.ScrubErrors, d.ScrubRepaired, d.ScrubUnrepairable)
			}
			if d.ScrubUnrepairable > 0 {
				return fmt.Errorf("disk %d: %d blocks have no good replica; see the server's log for which, and rewrite or restore them", c.ID, d.ScrubUnrepairable)
			}
			if d.ScrubState == "failed" {
				return fmt.Errorf("disk %d: scrub failed: %s", c.ID, d.ScrubError)
			}
			return nil
		}
		select {
		case <-env.Ctx.Done():
			return env.Ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// DiskEjectCmd is `keel disk eject`.
type DiskEjectCmd struct {
	ID int `arg:"" name:"ID" help:"Disk id."`
}

// Help is the long help of `keel disk eject`.
func (c *DiskEjectCmd) Help() string {
	return `Ejects a disk (DiskEject): it stops serving and takes no new data; its
objects are recovered from the other replicas. It stays ejected when its
server registers it again, until it is forgotten.`
}

// Run ejects.
func (c *DiskEjectCmd) Run(env *Env) error {
	return diskPost(env, fmt.Sprintf("DiskEject/%d", c.ID), nil, fmt.Sprintf("disk %d ejected", c.ID))
}

// DiskForgetCmd is `keel disk forget`.
type DiskForgetCmd struct {
	ID int `arg:"" name:"ID" help:"Disk id."`
}

// Help is the long help of `keel disk forget`.
func (c *DiskForgetCmd) Help() string {
	return `Removes an ejected or down disk from the cluster (DiskForget) and from its
placement groups. Refused while the disk is up: eject it first.`
}

// Run forgets.
func (c *DiskForgetCmd) Run(env *Env) error {
	return diskPost(env, fmt.Sprintf("DiskForget/%d", c.ID), nil, fmt.Sprintf("disk %d forgotten", c.ID))
}

// DiskSetDescriptionCmd is `keel disk set-description`.
type DiskSetDescriptionCmd struct {
	ID          int    `arg:"" name:"ID" help:"Disk id."`
	Description string `arg:"" name:"TEXT" help:"Up to 30 letters, digits, spaces, _ and -."`
}

// Help is the long help of `keel disk set-description`.
func (c *DiskSetDescriptionCmd) Help() string {
	return `Sets a disk's description (DiskSetDescription), e.g. its bay.

Example:
  keel disk set-description 101 "bay 3 left"`
}

// Run sets it.
func (c *DiskSetDescriptionCmd) Run(env *Env) error {
	return diskPost(env, fmt.Sprintf("DiskSetDescription/%d", c.ID), map[string]string{"description": c.Description},
		fmt.Sprintf("disk %d description set", c.ID))
}

func diskPost(env *Env, call string, body any, done string) error {
	if _, err := apiPost(env, call, body); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintln(env.Stdout, done)
	return nil
}
