-- The start time of the controller process that sent the report: a new
-- one raises the fencing token of the controller's volumes (iscsi.go).
ALTER TABLE iscsi_reports ADD COLUMN start_time INTEGER NOT NULL DEFAULT 0;
