// Package client is keel's volume I/O engine: it maps a volume's byte range
// onto objects and disk sets, sends each write to every up replica in
// parallel and acknowledges only when all of them did (or mgmt committed a
// silent replica as down), reads from the placeTail replica first, carries
// FLUSH and FUA to the servers, enforces the volume's iops/bandwidth limits
// and stamps every write with the attachment's fencing token. The client
// applet serves a Volume as an NBD export (it implements nbd.Backend); the
// iSCSI target and the bridge use it the same way. See DESIGN.md.
package client
