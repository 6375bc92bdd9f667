package applets

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"keel/mgmt"
)

// VolumeCmd groups the volume commands.
type VolumeCmd struct {
	Create   VolumeCreateCmd   `cmd:"" help:"Create a volume (empty, a clone of a snapshot, or a copy of a volume)."`
	List     VolumeListCmd     `cmd:"" help:"List the volumes."`
	Status   VolumeStatusCmd   `cmd:"" help:"Show each volume's and snapshot's health: up, degraded, down."`
	Describe VolumeDescribeCmd `cmd:"" help:"Show one volume with its disk-set table."`
	Update   VolumeUpdateCmd   `cmd:"" help:"Rename, resize, re-template, re-place or re-tag a volume."`
	Delete   VolumeDeleteCmd   `cmd:"" help:"Delete a volume (asks for its name again with --confirm)."`
}

// placementFlags are the policy options of create and update.
type placementFlags struct {
	Replication int               `help:"Number of copies, 1..3." placeholder:"N"`
	PlaceAll    string            `name:"place-all" help:"Placement group for all but the last replica." placeholder:"GROUP"`
	PlaceTail   string            `name:"place-tail" help:"Placement group for the last replica (reads are served from it)." placeholder:"GROUP"`
	PlaceHead   string            `name:"place-head" help:"Placement group for the first replica." placeholder:"GROUP"`
	Iops        int64             `help:"IOPS limit (0: unlimited)." placeholder:"N"`
	Bw          int64             `help:"Bandwidth limit in KiB/s (0: unlimited)." placeholder:"N"`
	ReuseServer bool              `name:"reuse-server" help:"Allow two replicas on one server (flags the volume)."`
	Tag         map[string]string `help:"Tags NAME=VALUE (repeatable; an empty VALUE removes the tag on update)." placeholder:"NAME=VALUE"`
}

func (p *placementFlags) body(b map[string]any) {
	if p.Replication != 0 {
		b["replication"] = p.Replication
	}
	for k, v := range map[string]string{"placeAll": p.PlaceAll, "placeTail": p.PlaceTail, "placeHead": p.PlaceHead} {
		if v != "" {
			b[k] = v
		}
	}
	if p.Iops != 0 {
		b["iops"] = p.Iops
	}
	if p.Bw != 0 {
		b["bw"] = p.Bw
	}
	if p.ReuseServer {
		b["reuseServer"] = true
	}
	if len(p.Tag) > 0 {
		b["tags"] = p.Tag
	}
}

// VolumeCreateCmd is `keel volume create`.
type VolumeCreateCmd struct {
	Name     string `arg:"" optional:"" name:"NAME" help:"Volume name; omit it to address the volume by its globalId only."`
	Size     Size   `help:"Size, like 10G, 512M (binary units); default: the template's or parent's." placeholder:"SIZE"`
	Template string `short:"t" help:"Template giving replication, placement, limits and a default size." placeholder:"T"`
	Parent   string `help:"Snapshot to clone (name or ~globalId); no data is copied." placeholder:"SNAPSHOT"`
	BaseOn   string `name:"base-on" help:"Volume to copy: a bound snapshot of it becomes the new volume's parent." placeholder:"VOLUME"`
	placementFlags
}

// Help is the long help of `keel volume create`.
func (c *VolumeCreateCmd) Help() string {
	return `Creates a thin volume (VolumeCreate). Settings come from the parent
snapshot, then the template, then the options here. The disk-set table is
drawn by the allocator: sets of --replication disks on distinct servers
(and fault sets), weighted by free space. A clone (--parent) keeps its
parent's disk sets unless the placement or replication changes.

Prints the name (~globalId for a nameless volume) and the globalId.
Exit status 1 when mgmt refuses (name taken, not enough servers, ...).

Examples:
  keel volume create vm1 --size 10G --template hybrid
  keel volume create --size 1T -t r3           # nameless
  keel volume create vm2 --parent vm1@golden`
}

// Run creates the volume.
func (c *VolumeCreateCmd) Run(env *Env) error {
	b := map[string]any{}
	if c.Name != "" {
		b["name"] = c.Name
	}
	if c.Size != 0 {
		b["size"] = int64(c.Size)
	}
	for k, v := range map[string]string{"template": c.Template, "parent": c.Parent, "baseOn": c.BaseOn} {
		if v != "" {
			b[k] = v
		}
	}
	c.placementFlags.body(b)
	var info struct {
		Name     string `json:"name"`
		GlobalID string `json:"globalId"`
	}
	raw, err := apiPost(env, "VolumeCreate", b)
	if err != nil || env.Globals.JSON {
		return err
	}
	if err := jsonInto(raw, &info); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "volume %s created (globalId %s)\n", info.Name, info.GlobalID)
	return nil
}

// VolumeListCmd is `keel volume list`.
type VolumeListCmd struct{}

// Help is the long help of `keel volume list`.
func (c *VolumeListCmd) Help() string {
	return `Lists every volume (VolumesList): name, size, replication, template, parent
snapshot, placement groups (all/tail) and globalId; "!" after the
replication marks a placement violation (reuseServer).`
}

// Run lists.
func (c *VolumeListCmd) Run(env *Env) error { return listVolumes(env, "VolumesList", false) }

func listVolumes(env *Env, call string, snapshots bool) error {
	var list []mgmt.VolumeSummary
	printed, err := apiGet(env, call, &list)
	if err != nil || printed {
		return err
	}
	head := []string{"NAME", "SIZE", "REPL", "TEMPLATE", "PARENT", "PLACE ALL/TAIL", "GLOBALID"}
	if snapshots {
		head = append(head, "ON VOLUME", "CREATED")
	}
	rows := [][]string{head}
	for _, v := range list {
		repl := itoa(v.Replication)
		if v.PlacementViolation {
			repl += "!"
		}
		r := []string{v.Name, humanSize(v.Size), repl, dash(v.TemplateName), dash(v.ParentName), dash(v.PlaceAll) + "/" + dash(v.PlaceTail), v.GlobalID}
		if snapshots {
			on := ""
			if v.OnVolume != nil {
				on = *v.OnVolume
			}
			if v.Deleted != nil && *v.Deleted {
				on += " (deleting)"
			}
			r = append(r, dash(on), time.Unix(v.CreationTimestamp, 0).UTC().Format("2006-01-02 15:04"))
		}
		rows = append(rows, r)
	}
	return table(env, rows)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// VolumeStatusCmd is `keel volume status`.
type VolumeStatusCmd struct{}

// Help is the long help of `keel volume status`.
func (c *VolumeStatusCmd) Help() string {
	return `Shows VolumesGetStatus: for every volume and snapshot whether all its data
has an up replica (up), some replicas are missing (up, degraded) or some
object has no up replica (down), with the missing disks. Exit status 1 when
some volume is down.`
}

// Run shows the status.
func (c *VolumeStatusCmd) Run(env *Env) error {
	var st map[string]mgmt.VolumeStatus
	printed, err := apiGet(env, "VolumesGetStatus", &st)
	if err != nil || printed {
		return err
	}
	names := make([]string, 0, len(st))
	for n := range st {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := [][]string{{"NAME", "KIND", "SIZE", "REPL", "STATUS", "MISSING DISKS"}}
	down := 0
	for _, n := range names {
		s := st[n]
		kind := "volume"
		if s.Snapshot {
			kind = "snapshot"
		}
		status := s.Status
		if s.DecreasedRedundancy && status == "up" {
			status = "up, degraded"
		}
		if s.Status == "down" {
			down++
		}
		rows = append(rows, []string{n, kind, humanSize(s.Size), itoa(s.Replication), status, dash(strings.Trim(fmt.Sprint(s.MissingDrives), "[]"))})
	}
	if err := table(env, rows); err != nil {
		return err
	}
	if down > 0 {
		return fmt.Errorf("%d volumes or snapshots are down", down)
	}
	return nil
}

// VolumeDescribeCmd is `keel volume describe`.
type VolumeDescribeCmd struct {
	Name string `arg:"" name:"NAME" help:"Volume name or ~globalId."`
}

// Help is the long help of `keel volume describe`.
func (c *VolumeDescribeCmd) Help() string {
	return `Shows one volume (VolumeDescribe): its settings, tags, fencing token and
disk-set table (object i lives on set i mod N; the last disk of a set is
the tail, which serves reads).`
}

// Run describes.
func (c *VolumeDescribeCmd) Run(env *Env) error { return describeVolume(env, "VolumeDescribe/"+c.Name) }

func describeVolume(env *Env, call string) error {
	var list []mgmt.VolumeDetail
	printed, err := apiGet(env, call, &list)
	if err != nil || printed {
		return err
	}
	if len(list) != 1 {
		return fmt.Errorf("%s: %d entries in the reply", call, len(list))
	}
	v := list[0]
	rows := [][]string{{"name", v.Name}, {"globalId", v.GlobalID}, {"size", fmt.Sprintf("%s (%d bytes)", humanSize(v.Size), v.Size)},
		{"replication", itoa(v.Replication)}, {"template", dash(v.TemplateName)}, {"parent", dash(v.ParentName)},
		{"placeAll/Tail/Head", dash(v.PlaceAll) + " / " + dash(v.PlaceTail) + " / " + dash(v.PlaceHead)},
		{"placement violation", fmt.Sprint(v.PlacementViolation)}, {"fencing token", fmt.Sprint(v.FencingToken)},
		{"created", time.Unix(v.CreationTimestamp, 0).UTC().Format(time.RFC3339)}, {"tags", dash(formatTags(v.Tags))},
		{"disk sets", fmt.Sprint(len(v.TargetDiskSets))}}
	for i, set := range v.TargetDiskSets {
		rows = append(rows, []string{fmt.Sprintf("  set %d", i), strings.Trim(fmt.Sprint(set), "[]")})
	}
	return table(env, rows)
}

func formatTags(t map[string]string) string {
	var out []string
	for k, v := range t {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// VolumeUpdateCmd is `keel volume update`.
type VolumeUpdateCmd struct {
	Name     string `arg:"" name:"NAME" help:"Volume name or ~globalId."`
	Rename   string `help:"New name." placeholder:"NEW"`
	Size     Size   `help:"New size (like 20G)." placeholder:"SIZE"`
	Grow     Size   `help:"Grow by this much (like 5G)." placeholder:"SIZE"`
	ShrinkOk bool   `name:"shrink-ok" help:"Allow --size to shrink the volume (data past the end is lost)."`
	Template string `short:"t" help:"Switch to this template's settings." placeholder:"T"`
	placementFlags
}

// Help is the long help of `keel volume update`.
func (c *VolumeUpdateCmd) Help() string {
	return `Changes a volume (VolumeUpdate). A change of replication or placement
draws a new disk-set table. Shrinking needs --shrink-ok.

Examples:
  keel volume update vm1 --grow 10G
  keel volume update vm1 --rename vm1-old --tag owner=ops`
}

// Run updates.
func (c *VolumeUpdateCmd) Run(env *Env) error {
	b := map[string]any{}
	if c.Rename != "" {
		b["rename"] = c.Rename
	}
	if c.Size != 0 {
		b["size"] = int64(c.Size)
	}
	if c.Grow != 0 {
		b["sizeAdd"] = int64(c.Grow)
	}
	if c.ShrinkOk {
		b["shrinkOk"] = true
	}
	if c.Template != "" {
		b["template"] = c.Template
	}
	c.placementFlags.body(b)
	if _, err := apiPost(env, "VolumeUpdate/"+c.Name, b); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "volume %s updated\n", c.Name)
	return nil
}

// VolumeDeleteCmd is `keel volume delete`.
type VolumeDeleteCmd struct {
	Name    string `arg:"" name:"NAME" help:"Volume name or ~globalId."`
	Confirm string `required:"" help:"The volume's name again, to confirm." placeholder:"NAME"`
}

// Help is the long help of `keel volume delete`.
func (c *VolumeDeleteCmd) Help() string {
	return `Deletes a volume (VolumeDelete). It must not be attached. Its snapshots
stay. --confirm must repeat NAME exactly (exit status 2 otherwise).

Example:
  keel volume delete vm1 --confirm vm1`
}

// Run deletes.
func (c *VolumeDeleteCmd) Run(env *Env) error {
	if err := confirmDelete("volume", c.Name, c.Confirm); err != nil {
		return err
	}
	if _, err := apiPost(env, "VolumeDelete/"+c.Name, nil); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "volume %s deleted\n", c.Name)
	return nil
}

// SnapshotCmd groups the snapshot commands.
type SnapshotCmd struct {
	Create   SnapshotCreateCmd   `cmd:"" help:"Snapshot a volume (metadata only, no data copied)."`
	List     SnapshotListCmd     `cmd:"" help:"List the snapshots."`
	Describe SnapshotDescribeCmd `cmd:"" help:"Show one snapshot with its disk-set table."`
	Delete   SnapshotDeleteCmd   `cmd:"" help:"Delete a snapshot (asks for its name again with --confirm)."`
	Revert   SnapshotRevertCmd   `cmd:"" help:"Revert a volume to one of its snapshots."`
}

// SnapshotCreateCmd is `keel snapshot create`.
type SnapshotCreateCmd struct {
	Volume string            `arg:"" name:"VOLUME" help:"Volume to snapshot (name or ~globalId)."`
	Name   string            `arg:"" optional:"" name:"NAME" help:"Snapshot name; omit it for an anonymous snapshot (addressed by ~globalId)."`
	Bind   bool              `help:"Delete the snapshot automatically once it has no children."`
	Tag    map[string]string `help:"Tags NAME=VALUE (repeatable)." placeholder:"NAME=VALUE"`
}

// Help is the long help of `keel snapshot create`.
func (c *SnapshotCreateCmd) Help() string {
	return `Takes a snapshot (VolumeSnapshot): the volume's current data is frozen as
the snapshot and the volume continues on fresh objects whose parent is it.

Example:
  keel snapshot create vm1 vm1@2024-05-01`
}

// Run snapshots.
func (c *SnapshotCreateCmd) Run(env *Env) error {
	b := map[string]any{}
	if c.Name != "" {
		b["name"] = c.Name
	}
	if c.Bind {
		b["bind"] = true
	}
	if len(c.Tag) > 0 {
		b["tags"] = c.Tag
	}
	raw, err := apiPost(env, "VolumeSnapshot/"+c.Volume, b)
	if err != nil || env.Globals.JSON {
		return err
	}
	var info struct {
		Name     string `json:"snapshotName"`
		GlobalID string `json:"snapshotGlobalId"`
	}
	if err := jsonInto(raw, &info); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "snapshot %s of %s created (globalId %s)\n", info.Name, c.Volume, info.GlobalID)
	return nil
}

// SnapshotListCmd is `keel snapshot list`.
type SnapshotListCmd struct{}

// Help is the long help of `keel snapshot list`.
func (c *SnapshotListCmd) Help() string {
	return `Lists every snapshot (SnapshotsList) with the volume it is the parent of;
snapshots deleted while they still have children show "(deleting)".`
}

// Run lists.
func (c *SnapshotListCmd) Run(env *Env) error { return listVolumes(env, "SnapshotsList", true) }

// SnapshotDescribeCmd is `keel snapshot describe`.
type SnapshotDescribeCmd struct {
	Name string `arg:"" name:"NAME" help:"Snapshot name or ~globalId."`
}

// Help is the long help of `keel snapshot describe`.
func (c *SnapshotDescribeCmd) Help() string {
	return `Shows one snapshot (SnapshotDescribe) with its disk-set table.`
}

// Run describes.
func (c *SnapshotDescribeCmd) Run(env *Env) error {
	return describeVolume(env, "SnapshotDescribe/"+c.Name)
}

// SnapshotDeleteCmd is `keel snapshot delete`.
type SnapshotDeleteCmd struct {
	Name    string `arg:"" name:"NAME" help:"Snapshot name or ~globalId."`
	Confirm string `required:"" help:"The snapshot's name again, to confirm." placeholder:"NAME"`
}

// Help is the long help of `keel snapshot delete`.
func (c *SnapshotDeleteCmd) Help() string {
	return `Deletes a snapshot (SnapshotDelete). A snapshot that still has children
(clones or the volume it was taken of) is marked deleted and goes away with
its last child; its data stays reachable until then.

Example:
  keel snapshot delete vm1@old --confirm vm1@old`
}

// Run deletes.
func (c *SnapshotDeleteCmd) Run(env *Env) error {
	if err := confirmDelete("snapshot", c.Name, c.Confirm); err != nil {
		return err
	}
	if _, err := apiPost(env, "SnapshotDelete/"+c.Name, nil); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "snapshot %s deleted\n", c.Name)
	return nil
}

// SnapshotRevertCmd is `keel snapshot revert`.
type SnapshotRevertCmd struct {
	Volume   string `arg:"" name:"VOLUME" help:"Volume to revert."`
	Snapshot string `arg:"" name:"SNAPSHOT" help:"One of the volume's parent snapshots."`
}

// Help is the long help of `keel snapshot revert`.
func (c *SnapshotRevertCmd) Help() string {
	return `Reverts VOLUME to SNAPSHOT (VolumeRevert): the volume's data after the
snapshot is dropped. The volume must be detached; the snapshot must be in
its parent chain.`
}

// Run reverts.
func (c *SnapshotRevertCmd) Run(env *Env) error {
	if _, err := apiPost(env, "VolumeRevert/"+c.Volume, map[string]any{"toSnapshot": c.Snapshot}); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "volume %s reverted to %s\n", c.Volume, c.Snapshot)
	return nil
}
