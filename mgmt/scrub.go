package mgmt

import (
	"time"

	"keel/mgmt/apiclient"
)

// Scrubbing of a disk (server/scrub.go reads and repairs). mgmt keeps the
// desired state in the disk's row: DiskScrubStart begins job scrub_job+1
// unless one is unfinished, DiskScrubPause and DiskScrubContinue set the
// paused flag (which outlives a job: pausing before a start makes the job
// start paused, as in StorPool). The disk's server polls DiskDescribe,
// runs the job, and reports its progress with DiskScrubReport, which is
// refused for any job but the current one. DisksList and DiskDescribe
// show both (apiclient.DiskScrub).

// scrubCols are the scrub columns of a disks row, in scrubRow.dest order.
const scrubCols = `scrub_job, scrub_started, scrub_completed, scrub_paused, scrub_paused_since, scrub_paused_secs,
	scrub_state, scrub_error, scrub_slot, scrub_au, scrubbed_bytes, scrub_total_bytes, scrub_bw, scrub_blocks,
	scrub_errors, scrub_repaired, scrub_unrepairable, scrub_errors_total, scrub_last_completed`

type scrubRow struct {
	job, started, completed                         int64
	paused                                          bool
	pausedSince, pausedSecs                         int64
	state, err                                      string
	slot, au, bytes, total, bw, blocks              int64
	errors, repaired, unrepairable, errTotal, lastC int64
}

func (r *scrubRow) dest() []any {
	return []any{&r.job, &r.started, &r.completed, &r.paused, &r.pausedSince, &r.pausedSecs, &r.state, &r.err,
		&r.slot, &r.au, &r.bytes, &r.total, &r.bw, &r.blocks, &r.errors, &r.repaired, &r.unrepairable, &r.errTotal, &r.lastC}
}

// running: a job was started and has neither finished nor failed.
func (r *scrubRow) running() bool {
	return r.job > 0 && r.completed == 0 && r.state != "failed"
}

// summary is what DisksList shows, at time now.
func (r *scrubRow) summary(now int64) apiclient.DiskScrub {
	d := apiclient.DiskScrub{Scrubbing: r.running(), ScrubbingPaused: r.paused, ScrubbedBytes: r.bytes,
		ScrubbingBW: r.bw, LastScrubCompleted: r.lastC, TotalErrorsDetected: r.errTotal,
		ScrubJob: r.job, ScrubState: r.state, ScrubTotalBytes: r.total, ScrubPosition: apiclient.ScrubPosition{Slot: r.slot, AU: r.au},
		ScrubBlocks: r.blocks, ScrubErrors: r.errors, ScrubRepaired: r.repaired, ScrubUnrepairable: r.unrepairable, ScrubError: r.err}
	if !d.Scrubbing {
		return d
	}
	d.ScrubbingStartedBefore = max(0, now-r.started)
	d.ScrubbingPausedFor = r.pausedSecs
	if r.paused {
		d.ScrubbingPausedFor += max(0, now-r.pausedSince)
	}
	if r.bw > 0 && r.total > r.bytes {
		d.ScrubbingFinishAfter = (r.total - r.bytes + r.bw - 1) / r.bw
	}
	return d
}

// scrubOf reads disk id's scrub state inside a command.
func (t *txn) scrubOf(id int) (*scrubRow, error) {
	if _, _, err := diskState(t, id); err != nil {
		return nil, err
	}
	var r scrubRow
	if err := t.tx.QueryRow(`SELECT `+scrubCols+` FROM disks WHERE id = ?`, id).Scan(r.dest()...); err != nil {
		return nil, err
	}
	return &r, nil
}

func cmdDiskScrubStart(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	state, _, err := diskState(t, id)
	if err != nil {
		return nil, err
	}
	if state != "up" {
		return nil, apiErr(ErrNotAllowed, "disk %d is %s; only an up disk is scrubbed (recovery brings a returning disk up to date first)", id, state)
	}
	r, err := t.scrubOf(id)
	if err != nil {
		return nil, err
	}
	if r.running() {
		return map[string]any{"generation": t.gen, "job": r.job, "started": false}, nil
	}
	now := t.cmd.Time
	_, err = t.tx.Exec(`UPDATE disks SET scrub_job = scrub_job + 1, scrub_started = ?, scrub_completed = 0,
		scrub_paused_since = ?, scrub_paused_secs = 0, scrub_state = '', scrub_error = '', scrub_slot = 0, scrub_au = 0,
		scrubbed_bytes = 0, scrub_total_bytes = 0, scrub_bw = 0, scrub_blocks = 0, scrub_errors = 0, scrub_repaired = 0,
		scrub_unrepairable = 0 WHERE id = ?`, now, now, id)
	return map[string]any{"generation": t.gen, "job": r.job + 1, "started": true}, err
}

func cmdDiskScrubPause(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	r, err := t.scrubOf(id)
	if err != nil || r.paused {
		return nil, err
	}
	_, err = t.tx.Exec(`UPDATE disks SET scrub_paused = 1, scrub_paused_since = ? WHERE id = ?`, t.cmd.Time, id)
	return nil, err
}

func cmdDiskScrubContinue(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	r, err := t.scrubOf(id)
	if err != nil || !r.paused {
		return nil, err
	}
	secs := r.pausedSecs
	if r.running() {
		secs += max(0, t.cmd.Time-r.pausedSince)
	}
	_, err = t.tx.Exec(`UPDATE disks SET scrub_paused = 0, scrub_paused_secs = ? WHERE id = ?`, secs, id)
	return nil, err
}

func cmdDiskScrubReport(t *txn) (any, error) {
	id, err := diskID(t)
	if err != nil {
		return nil, err
	}
	rep, err := decodeAs[*apiclient.DiskScrubReport](t)
	if err != nil {
		return nil, err
	}
	r, err := t.scrubOf(id)
	if err != nil {
		return nil, err
	}
	if rep.Job != r.job || r.completed != 0 {
		return nil, apiErr(ErrNotAllowed, "disk %d: scrub job %d is not the running one (job %d, finished at %d); follow DiskDescribe", id, rep.Job, r.job, r.completed)
	}
	completed, last := int64(0), r.lastC
	if rep.State == "done" {
		completed, last = t.cmd.Time, t.cmd.Time
	}
	_, err = t.tx.Exec(`UPDATE disks SET scrub_state = ?, scrub_error = ?, scrub_slot = ?, scrub_au = ?, scrubbed_bytes = ?,
		scrub_total_bytes = ?, scrub_bw = ?, scrub_blocks = ?, scrub_errors = ?, scrub_repaired = ?, scrub_unrepairable = ?,
		scrub_errors_total = scrub_errors_total + ?, scrub_completed = ?, scrub_last_completed = ? WHERE id = ?`,
		rep.State, rep.Error, rep.Position.Slot, rep.Position.AU, rep.ScrubbedBytes, rep.TotalBytes, rep.BW, rep.Blocks,
		rep.Errors, rep.Repaired, rep.Unrepairable, max(0, rep.Errors-r.errors), completed, last, id)
	return map[string]any{"generation": t.gen}, err
}

func decodeScrubReport(body []byte) (any, error) {
	var r apiclient.DiskScrubReport
	if err := decodeStrict(body, &r); err != nil {
		return nil, err
	}
	switch r.State {
	case "running", "paused", "done", "failed":
	default:
		return nil, invalidParam("state", "%q is not one of running, paused, done, failed", r.State)
	}
	if r.Job <= 0 || r.ScrubbedBytes < 0 || r.Blocks < 0 || r.Errors < 0 || r.Repaired < 0 || r.Unrepairable < 0 ||
		r.Repaired+r.Unrepairable > r.Errors || r.Position.Slot < 0 || r.Position.AU < 0 {
		return nil, invalidParam("job", "job must be positive, counts not negative, repaired+unrepairable at most errors")
	}
	return &r, nil
}

// scrubSummary fills the scrub part of a disk summary from its row.
func scrubSummary(r *scrubRow) apiclient.DiskScrub { return r.summary(time.Now().Unix()) }

// DiskScrub is the scrubbing part of a DiskSummary (defined in apiclient,
// which the storage server shares).
type DiskScrub = apiclient.DiskScrub
