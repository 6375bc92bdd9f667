package mgmt

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"keel/mgmt/apiclient"
)

// DiskScrubStart / Pause / Continue as python-storpool's own test expects
// them (pause before start: the job starts paused), and DiskScrubReport
// from the disk's server feeding DisksList / DiskDescribe.
func TestDiskScrubControl(t *testing.T) {
	_, c := mustNewService(t)
	addDisks(t, c, 1, 2)
	ctx := context.Background()
	disk := func(id int) DiskSummary {
		t.Helper()
		var list map[string]DiskSummary
		if _, err := c.Get(ctx, "DisksList", nil, &list); err != nil {
			t.Fatal(err)
		}
		var d DiskSummary
		if _, err := c.Get(ctx, "DiskDescribe/"+strconv.Itoa(id), nil, &d); err != nil {
			t.Fatal(err)
		}
		// The two calls agree, but for the seconds elapsed, which may
		// have moved on by one between them.
		l, dd := list[strconv.Itoa(id)].DiskScrub, d.DiskScrub
		for _, f := range []struct{ before, after *int64 }{
			{&l.ScrubbingStartedBefore, &dd.ScrubbingStartedBefore},
			{&l.ScrubbingPausedFor, &dd.ScrubbingPausedFor},
		} {
			if *f.after == *f.before+1 {
				*f.after = *f.before
			}
		}
		if l != dd {
			t.Fatalf("DisksList %+v and DiskDescribe %+v disagree", list[strconv.Itoa(id)].DiskScrub, d.DiskScrub)
		}
		return d
	}
	if d := disk(100); d.Scrubbing || d.ScrubbingPaused || d.ScrubJob != 0 {
		t.Fatalf("new disk: %+v, want no scrub", d.DiskScrub)
	}
	mustPost(t, c, "DiskScrubPause/100", nil, nil)
	if d := disk(100); !d.ScrubbingPaused || d.Scrubbing {
		t.Fatalf("after pause: %+v, want paused, not scrubbing", d.DiskScrub)
	}
	mustPost(t, c, "DiskScrubStart/100", nil, nil)
	d := disk(100)
	if !d.Scrubbing || !d.ScrubbingPaused || d.ScrubJob != 1 || d.ScrubbingStartedBefore != d.ScrubbingPausedFor {
		t.Fatalf("start while paused: %+v, want job 1 scrubbing, paused, startedBefore == pausedFor", d.DiskScrub)
	}
	mustPost(t, c, "DiskScrubContinue/100", nil, nil)
	if d := disk(100); d.ScrubbingPaused || !d.Scrubbing {
		t.Fatalf("after continue: %+v", d.DiskScrub)
	}
	// A second start while the job runs keeps it.
	mustPost(t, c, "DiskScrubStart/100", nil, nil)
	if d := disk(100); d.ScrubJob != 1 {
		t.Fatalf("start while running made job %d", d.ScrubJob)
	}

	report := func(r apiclient.DiskScrubReport) error {
		_, err := c.Post(ctx, "DiskScrubReport/100", r, nil)
		return err
	}
	if err := report(apiclient.DiskScrubReport{Job: 1, State: "running", Position: apiclient.ScrubPosition{Slot: 3, AU: 1},
		ScrubbedBytes: 4 << 20, TotalBytes: 16 << 20, Blocks: 900, Errors: 2, Repaired: 1, BW: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	d = disk(100)
	want := DiskScrub{Scrubbing: true, ScrubbedBytes: 4 << 20, ScrubbingBW: 1 << 20, ScrubbingFinishAfter: 12, TotalErrorsDetected: 2,
		ScrubJob: 1, ScrubState: "running", ScrubTotalBytes: 16 << 20, ScrubPosition: apiclient.ScrubPosition{Slot: 3, AU: 1},
		ScrubBlocks: 900, ScrubErrors: 2, ScrubRepaired: 1}
	want.ScrubbingStartedBefore, want.ScrubbingPausedFor = d.ScrubbingStartedBefore, d.ScrubbingPausedFor
	if d.DiskScrub != want {
		t.Fatalf("after a report: %+v, want %+v", d.DiskScrub, want)
	}
	var ae *apiclient.APIError
	if err := report(apiclient.DiskScrubReport{Job: 2, State: "running"}); !errors.As(err, &ae) || ae.Name != ErrNotAllowed {
		t.Fatalf("report of another job: %v, want %s", err, ErrNotAllowed)
	}
	if err := report(apiclient.DiskScrubReport{Job: 1, State: "running", Errors: 1, Repaired: 2}); !errors.As(err, &ae) || ae.Name != ErrInvalidParam {
		t.Fatalf("report with more repaired than errors: %v, want %s", err, ErrInvalidParam)
	}
	if err := report(apiclient.DiskScrubReport{Job: 1, State: "done", Position: apiclient.ScrubPosition{Slot: 99}, ScrubbedBytes: 16 << 20,
		TotalBytes: 16 << 20, Blocks: 3000, Errors: 3, Repaired: 2, Unrepairable: 1}); err != nil {
		t.Fatal(err)
	}
	d = disk(100)
	if d.Scrubbing || d.ScrubState != "done" || d.LastScrubCompleted == 0 || d.TotalErrorsDetected != 3 || d.ScrubUnrepairable != 1 {
		t.Fatalf("after done: %+v", d.DiskScrub)
	}
	if err := report(apiclient.DiskScrubReport{Job: 1, State: "running"}); !errors.As(err, &ae) || ae.Name != ErrNotAllowed {
		t.Fatalf("report of a finished job: %v, want %s", err, ErrNotAllowed)
	}
	// A new job starts from the beginning; the total keeps counting.
	mustPost(t, c, "DiskScrubStart/100", nil, nil)
	if d := disk(100); !d.Scrubbing || d.ScrubJob != 2 || d.ScrubErrors != 0 || d.ScrubPosition != (apiclient.ScrubPosition{}) || d.TotalErrorsDetected != 3 {
		t.Fatalf("second job: %+v", d.DiskScrub)
	}
	if d := disk(101); d.Scrubbing || d.ScrubJob != 0 {
		t.Fatalf("the other disk: %+v", d.DiskScrub)
	}

	mustPost(t, c, "DiskEject/101", nil, nil)
	if _, err := c.Post(ctx, "DiskScrubStart/101", nil, nil); !errors.As(err, &ae) || ae.Name != ErrNotAllowed {
		t.Fatalf("scrub of an ejected disk: %v, want %s", err, ErrNotAllowed)
	}
	if _, err := c.Post(ctx, "DiskScrubStart/7", nil, nil); !errors.As(err, &ae) || ae.Name != ErrNotFound {
		t.Fatalf("scrub of an unknown disk: %v, want %s", err, ErrNotFound)
	}
}
