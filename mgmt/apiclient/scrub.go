package apiclient

// DiskScrub is the scrubbing part of a DisksList / DiskDescribe entry.
// The fields named like StorPool's UpDiskSummary keep their meaning there;
// the scrub* ones without a StorPool twin are keel extensions. mgmt
// stores the desired state (DiskScrubStart, DiskScrubPause,
// DiskScrubContinue) and what the disk's server last reported
// (DiskScrubReport); the server follows the desired state.
type DiskScrub struct {
	// Scrubbing: a job was started and has not finished (it may be
	// paused).
	Scrubbing bool `json:"scrubbing"`
	// ScrubbingPaused: scrubbing of this disk is paused (also before a
	// job starts: it then starts paused).
	ScrubbingPaused bool `json:"scrubbingPaused"`
	// ScrubbingStartedBefore: seconds since the running job started.
	ScrubbingStartedBefore int64 `json:"scrubbingStartedBefore"`
	// ScrubbingPausedFor: seconds the running job has been paused.
	ScrubbingPausedFor int64 `json:"scrubbingPausedFor"`
	// ScrubbedBytes: bytes read by the current (or last) job.
	ScrubbedBytes int64 `json:"scrubbedBytes"`
	// ScrubbingBW: the job's read rate while running, bytes per second.
	ScrubbingBW int64 `json:"scrubbingBW"`
	// ScrubbingFinishAfter: estimated seconds until the job finishes.
	ScrubbingFinishAfter int64 `json:"scrubbingFinishAfter"`
	// LastScrubCompleted: unix time the last job finished, 0 never.
	LastScrubCompleted int64 `json:"lastScrubCompleted"`
	// TotalErrorsDetected: blocks failing their checksum, every job.
	TotalErrorsDetected int64 `json:"totalErrorsDetected"`

	// keel extensions.
	ScrubJob   int64  `json:"scrubJob"`   // number of the current or last job, 0 none
	ScrubState string `json:"scrubState"` // as reported: running, paused, done, failed; "" not yet reported
	// ScrubTotalBytes: the disk's allocated bytes when the job started.
	ScrubTotalBytes   int64         `json:"scrubTotalBytes"`
	ScrubPosition     ScrubPosition `json:"scrubPosition"`
	ScrubBlocks       int64         `json:"scrubBlocks"`       // data blocks verified by the job
	ScrubErrors       int64         `json:"scrubErrors"`       // checksum errors the job found
	ScrubRepaired     int64         `json:"scrubRepaired"`     // of which repaired from a replica
	ScrubUnrepairable int64         `json:"scrubUnrepairable"` // of which without a good replica
	ScrubError        string        `json:"scrubError,omitempty"`
}

// ScrubPosition is where a scrub job continues on its disk: an object
// table slot and an AU index in that slot's object.
type ScrubPosition struct {
	Slot int64 `json:"slot"`
	AU   int64 `json:"au"`
}

// DiskScrubReport is the body of the keel extension
// POST /ctrl/1.0/DiskScrubReport/<diskId>: a storage server's progress of
// the disk's scrub job Job.
type DiskScrubReport struct {
	Job           int64         `json:"job"`
	State         string        `json:"state"` // running, paused, done, failed
	Position      ScrubPosition `json:"position"`
	ScrubbedBytes int64         `json:"scrubbedBytes"`
	TotalBytes    int64         `json:"totalBytes"`
	Blocks        int64         `json:"blocks"`
	Errors        int64         `json:"errors"`
	Repaired      int64         `json:"repaired"`
	Unrepairable  int64         `json:"unrepairable"`
	BW            int64         `json:"bw"`
	Error         string        `json:"error,omitempty"`
}
