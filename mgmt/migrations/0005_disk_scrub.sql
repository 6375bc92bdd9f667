-- Disk scrubbing (scrub.go): the desired state that DiskScrubStart,
-- DiskScrubPause and DiskScrubContinue set, and the progress the disk's
-- server last reported (DiskScrubReport). Times are unix seconds.
ALTER TABLE disks ADD COLUMN scrub_job INTEGER NOT NULL DEFAULT 0;           -- current or last job, 0 none
ALTER TABLE disks ADD COLUMN scrub_started INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_completed INTEGER NOT NULL DEFAULT 0;     -- when the job finished, 0 while it runs
ALTER TABLE disks ADD COLUMN scrub_paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_paused_since INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_paused_secs INTEGER NOT NULL DEFAULT 0;   -- the job's paused time before scrub_paused_since
ALTER TABLE disks ADD COLUMN scrub_state TEXT NOT NULL DEFAULT '';           -- as reported
ALTER TABLE disks ADD COLUMN scrub_error TEXT NOT NULL DEFAULT '';
ALTER TABLE disks ADD COLUMN scrub_slot INTEGER NOT NULL DEFAULT 0;          -- position
ALTER TABLE disks ADD COLUMN scrub_au INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrubbed_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_total_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_bw INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_blocks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_errors INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_repaired INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_unrepairable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE disks ADD COLUMN scrub_errors_total INTEGER NOT NULL DEFAULT 0;  -- every job's errors
ALTER TABLE disks ADD COLUMN scrub_last_completed INTEGER NOT NULL DEFAULT 0;
