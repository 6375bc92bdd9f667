package applets

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"keel/mgmt/apiclient"
	"keel/node"
	"keel/server"
)

// DiskInitCmd is `keel disk init`.
type DiskInitCmd struct {
	Path      string `arg:"" name:"PATH" help:"Block device or file to initialise."`
	ID        uint32 `name:"id" required:"" placeholder:"N" help:"Disk id, unique in the cluster (1..4294967295)."`
	SSD       bool   `name:"ssd" help:"Mark the disk as an SSD (placement groups and reads may prefer it)."`
	Force     bool   `help:"Overwrite an existing keel superblock (its data is lost)."`
	ClusterID string `name:"cluster-id" placeholder:"ID" help:"Cluster the disk belongs to; default: asked from mgmt (ClusterStatus)."`
}

// Help is the long help of `keel disk init`.
func (c *DiskInitCmd) Help() string {
	return `Writes a keel superblock (cluster id, disk id, node id, format version,
size, layout, checksum) at the start of PATH, a block device or a regular
file, and records the disk in the node state so keel_server opens it (also
list it in server.disks to be explicit). Objects on the disk have the size
server.object_size. Only the superblock is written: initialising a large
device is instant.

Refused, with a message saying why, when PATH does not exist, is mounted or
held by the kernel (a partition mounted, swap, RAID or LVM member), already
holds a keel superblock (unless --force), is too small for two objects, or
when the disk id is already known to the cluster (checked with mgmt when it
is reachable) or to this node for another path.

The cluster id is --cluster-id or, by default, the clusterId of mgmt's
ClusterStatus.

Exit status: 0 when the disk was initialised, 1 when refused or failed,
2 for a wrong invocation.

Examples:
  keel disk init /dev/nvme0n1 --id 101 --ssd
  truncate -s 200G /srv/keel/disk1 && keel disk init /srv/keel/disk1 --id 102`
}

// Run initialises the disk.
func (c *DiskInitCmd) Run(env *Env) error {
	if c.ID == 0 {
		return usageError("disk init: --id must be positive")
	}
	cfg, err := env.Config()
	if err != nil {
		return err
	}
	st, err := env.State()
	if err != nil {
		return err
	}
	path, err := filepath.Abs(c.Path)
	if err != nil {
		return err
	}
	var otherPath string
	switch err := st.DB.QueryRowContext(env.Ctx, "SELECT path FROM server_disks WHERE id = ?", c.ID).Scan(&otherPath); {
	case err == nil && otherPath != path:
		if d := server.ProbeDisk(otherPath); d.State == "ok" && d.DiskID == c.ID {
			return fmt.Errorf("disk init %s: disk id %d is already %s on this node; choose another id", path, c.ID, otherPath)
		}
	case err != nil && !isNoRows(err):
		return err
	}
	clusterID, err := c.checkWithMgmt(env, cfg, path)
	if err != nil {
		return err
	}
	sb, err := server.InitDisk(path, server.FormatParams{ClusterID: clusterID, DiskID: c.ID, NodeID: uint32(cfg.Node.ID),
		SSD: c.SSD, ObjectSize: uint32(cfg.Server.ObjectSize)}, c.Force)
	if err != nil {
		return err
	}
	ssd := 0
	if sb.SSD {
		ssd = 1
	}
	if _, err := st.DB.ExecContext(env.Ctx, `INSERT INTO server_disks(id, path, cluster_id, ssd, size, created) VALUES(?, ?, ?, ?, ?, ?)
		ON CONFLICT(id) DO UPDATE SET path = excluded.path, cluster_id = excluded.cluster_id, ssd = excluded.ssd, size = excluded.size, created = excluded.created`,
		sb.DiskID, path, sb.ClusterID, ssd, int64(sb.Size), sb.Created.Format(time.RFC3339)); err != nil {
		return fmt.Errorf("disk init %s: initialised, but recording it in the node state failed: %w", path, err)
	}
	if env.Globals.JSON {
		return env.PrintJSON(server.ProbeDisk(path))
	}
	fmt.Fprintf(env.Stdout, "disk %d initialised on %s: cluster %s, %d MiB of data in %d objects of %d MiB\n",
		sb.DiskID, path, sb.ClusterID, sb.NumAUs*server.AUSize>>20, sb.NumAUs*server.AUSize/uint64(sb.ObjectSize), sb.ObjectSize>>20)
	return nil
}

// checkWithMgmt asks mgmt, when reachable, whether the disk id is taken,
// and for the cluster id when none was given.
func (c *DiskInitCmd) checkWithMgmt(env *Env, cfg *node.Config, path string) (string, error) {
	tok, terr := apiclient.ReadToken(cfg.Mgmt.TokenFile)
	if terr != nil && c.ClusterID == "" {
		return "", fmt.Errorf("disk init %s: no --cluster-id and no mgmt to ask (%v); join the node to a cluster or pass --cluster-id", path, terr)
	}
	if terr != nil {
		env.Log.Warn("cannot ask mgmt whether the disk id is free", "err", terr)
		return c.ClusterID, nil
	}
	api := apiclient.New(cfg.Mgmt.APIURL, tok)
	ctx, cancel := context.WithTimeout(env.Ctx, 10*time.Second)
	defer cancel()
	clusterID := c.ClusterID
	if clusterID == "" {
		var status struct {
			ClusterID string `json:"clusterId"`
		}
		if _, err := api.Get(ctx, "ClusterStatus", nil, &status); err != nil || status.ClusterID == "" {
			return "", fmt.Errorf("disk init %s: asking mgmt for the cluster id: %v; pass --cluster-id", path, err)
		}
		clusterID = status.ClusterID
	}
	var known struct {
		ID       uint32 `json:"id"`
		ServerID uint32 `json:"serverId"`
	}
	_, err := api.Get(ctx, fmt.Sprintf("DiskDescribe/%d", c.ID), nil, &known)
	var apiErr *apiclient.APIError
	switch {
	case err == nil:
		return "", fmt.Errorf("disk init %s: disk id %d is already known to the cluster (server %d); choose another id, or forget the old disk first (keel disk %d forget)", path, c.ID, known.ServerID, c.ID)
	case errors.As(err, &apiErr):
		// Not found (or not answerable): the id is free as far as mgmt knows.
	default:
		env.Log.Warn("mgmt unreachable: cannot check that the disk id is free in the cluster", "err", err)
	}
	return clusterID, nil
}

// DiskListLocalCmd is `keel disk list-local`.
type DiskListLocalCmd struct{}

// Help is the long help of `keel disk list-local`.
func (c *DiskListLocalCmd) Help() string {
	return `Lists the disks in server.disks, the disks recorded by keel disk init in
the node state, and every whole block device holding a keel superblock.
For each: path, state (ok, missing, no superblock, bad superblock, error),
disk id, cluster id, node id, SSD flag and size, read from its superblock.
Nothing is changed. With --json, a list of objects.

Exit status: 0, or 1 when the configuration or state cannot be read.`
}

// Run lists the disks.
func (c *DiskListLocalCmd) Run(env *Env) error {
	paths, err := localDiskPaths(env)
	if err != nil {
		return err
	}
	disks := server.ListLocalDisks(paths)
	if env.Globals.JSON {
		if disks == nil {
			disks = []server.LocalDisk{}
		}
		return env.PrintJSON(disks)
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tSTATE\tDISK\tCLUSTER\tNODE\tSSD\tSIZE")
	for _, d := range disks {
		if d.State != "ok" {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t-\n", d.Path, d.State)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%v\t%d MiB\n", d.Path, d.State, d.DiskID, d.ClusterID, d.NodeID, d.SSD, d.SizeBytes>>20)
	}
	return tw.Flush()
}

// localDiskPaths is server.disks plus the disks recorded in the state.
func localDiskPaths(env *Env) ([]string, error) {
	cfg, err := env.Config()
	if err != nil {
		return nil, err
	}
	st, err := env.State()
	if err != nil {
		return nil, err
	}
	paths := append([]string(nil), cfg.Server.Disks...)
	rows, err := st.DB.QueryContext(env.Ctx, "SELECT path FROM server_disks ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list disks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, fmt.Errorf("list disks: %w", err)
		}
		paths = append(paths, p)
	}
	return paths, rows.Err()
}

func isNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
