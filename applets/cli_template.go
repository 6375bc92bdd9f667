package applets

import (
	"fmt"
	"sort"
	"strings"

	"keel/mgmt"
)

// TemplateCmd groups the volume template commands.
type TemplateCmd struct {
	Create   TemplateCreateCmd   `cmd:"" help:"Create a volume template."`
	List     TemplateListCmd     `cmd:"" help:"List the templates."`
	Status   TemplateStatusCmd   `cmd:"" help:"Show each template's volumes and free space."`
	Describe TemplateDescribeCmd `cmd:"" help:"Show one template."`
	Update   TemplateUpdateCmd   `cmd:"" help:"Change a template."`
	Delete   TemplateDeleteCmd   `cmd:"" help:"Delete an unused template."`
}

// TemplateCreateCmd is `keel template create`.
type TemplateCreateCmd struct {
	Name   string `arg:"" name:"NAME" help:"Template name (letters, digits, _ and -)."`
	Size   Size   `help:"Default size of volumes (like 10G)." placeholder:"SIZE"`
	Parent string `help:"Snapshot new volumes are clones of." placeholder:"SNAPSHOT"`
	placementFlags
}

// Help is the long help of `keel template create`.
func (c *TemplateCreateCmd) Help() string {
	return `Creates a template (VolumeTemplateCreate): replication 1..3, the placement
groups of the head, middle and tail replicas (empty: every disk), limits
and reuseServer. Placement groups must exist.

Example:
  keel template create hybrid --replication 3 --place-all hdd --place-tail ssd`
}

// Run creates.
func (c *TemplateCreateCmd) Run(env *Env) error {
	b := map[string]any{"name": c.Name}
	if c.Size != 0 {
		b["size"] = int64(c.Size)
	}
	if c.Parent != "" {
		b["parent"] = c.Parent
	}
	c.placementFlags.body(b)
	if _, err := apiPost(env, "VolumeTemplateCreate", b); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "template %s created\n", c.Name)
	return nil
}

// TemplateListCmd is `keel template list`.
type TemplateListCmd struct{}

// Help is the long help of `keel template list`.
func (c *TemplateListCmd) Help() string {
	return `Lists the templates (VolumeTemplatesList): replication, placement groups,
default size, reuseServer.`
}

// Run lists.
func (c *TemplateListCmd) Run(env *Env) error {
	var list []mgmt.TemplateDesc
	printed, err := apiGet(env, "VolumeTemplatesList", &list)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"NAME", "REPL", "PLACE HEAD", "PLACE ALL", "PLACE TAIL", "SIZE", "REUSE SERVER"}}
	for _, t := range list {
		size := "-"
		if n, ok := t.Size.(float64); ok {
			size = humanSize(int64(n))
		}
		rows = append(rows, []string{t.Name, fmt.Sprint(t.Replication), dash(t.PlaceHead), dash(t.PlaceAll), dash(t.PlaceTail), size, fmt.Sprint(t.ReuseServer)})
	}
	return table(env, rows)
}

// TemplateStatusCmd is `keel template status`.
type TemplateStatusCmd struct{}

// Help is the long help of `keel template status`.
func (c *TemplateStatusCmd) Help() string {
	return `Shows VolumeTemplatesStatus: per template the number of volumes and
snapshots, their provisioned size, and the free space and capacity of the
disks of its placement groups.`
}

// Run shows the status.
func (c *TemplateStatusCmd) Run(env *Env) error {
	var list []map[string]any
	printed, err := apiGet(env, "VolumeTemplatesStatus", &list)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"NAME", "VOLUMES", "SNAPSHOTS", "SIZE", "FREE (TAIL)", "CAPACITY (TAIL)"}}
	num := func(v any) int64 { f, _ := v.(float64); return int64(f) }
	for _, t := range list {
		rows = append(rows, []string{fmt.Sprint(t["name"]), fmt.Sprint(num(t["volumesCount"])), fmt.Sprint(num(t["snapshotsCount"])),
			humanSize(num(t["size"])), humanSize(num(t["availablePlaceTail"])), humanSize(num(t["capacityPlaceTail"]))})
	}
	return table(env, rows)
}

// TemplateDescribeCmd is `keel template describe`.
type TemplateDescribeCmd struct {
	Name string `arg:"" name:"NAME" help:"Template name."`
}

// Help is the long help of `keel template describe`.
func (c *TemplateDescribeCmd) Help() string { return `Shows one template (VolumeTemplateDescribe).` }

// Run describes.
func (c *TemplateDescribeCmd) Run(env *Env) error {
	var t mgmt.TemplateDesc
	printed, err := apiGet(env, "VolumeTemplateDescribe/"+c.Name, &t)
	if err != nil || printed {
		return err
	}
	return table(env, [][]string{{"name", t.Name}, {"replication", fmt.Sprint(t.Replication)}, {"placeHead", dash(t.PlaceHead)},
		{"placeAll", dash(t.PlaceAll)}, {"placeTail", dash(t.PlaceTail)}, {"size", fmt.Sprint(t.Size)}, {"parent", dash(t.ParentName)},
		{"reuseServer", fmt.Sprint(t.ReuseServer)}})
}

// TemplateUpdateCmd is `keel template update`.
type TemplateUpdateCmd struct {
	Name      string `arg:"" name:"NAME" help:"Template name."`
	Rename    string `help:"New name." placeholder:"NEW"`
	Size      Size   `help:"New default size." placeholder:"SIZE"`
	Propagate bool   `help:"Apply limits and reuseServer to the template's volumes now."`
	placementFlags
}

// Help is the long help of `keel template update`.
func (c *TemplateUpdateCmd) Help() string {
	return `Changes a template (VolumeTemplateUpdate). New volumes use the new
settings; --propagate applies limits and reuseServer to existing ones.`
}

// Run updates.
func (c *TemplateUpdateCmd) Run(env *Env) error {
	b := map[string]any{}
	if c.Rename != "" {
		b["rename"] = c.Rename
	}
	if c.Size != 0 {
		b["size"] = int64(c.Size)
	}
	if c.Propagate {
		b["propagate"] = true
	}
	c.placementFlags.body(b)
	if _, err := apiPost(env, "VolumeTemplateUpdate/"+c.Name, b); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "template %s updated\n", c.Name)
	return nil
}

// TemplateDeleteCmd is `keel template delete`.
type TemplateDeleteCmd struct {
	Name string `arg:"" name:"NAME" help:"Template name."`
}

// Help is the long help of `keel template delete`.
func (c *TemplateDeleteCmd) Help() string {
	return `Deletes a template (VolumeTemplateDelete); refused while volumes or
snapshots use it.`
}

// Run deletes.
func (c *TemplateDeleteCmd) Run(env *Env) error {
	if _, err := apiPost(env, "VolumeTemplateDelete/"+c.Name, nil); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "template %s deleted\n", c.Name)
	return nil
}

// PlacementGroupCmd groups the placement group commands.
type PlacementGroupCmd struct {
	List     PGListCmd     `cmd:"" help:"List the placement groups and their disks."`
	Describe PGDescribeCmd `cmd:"" help:"Show one placement group."`
	Update   PGUpdateCmd   `cmd:"" help:"Create a placement group, add or remove disks, rename it."`
	Delete   PGDeleteCmd   `cmd:"" help:"Delete an unused placement group."`
}

// PGListCmd is `keel placement-group list`.
type PGListCmd struct{}

// Help is the long help of `keel placement-group list`.
func (c *PGListCmd) Help() string {
	return `Lists the placement groups (PlacementGroupsList) and their disk ids.`
}

// Run lists.
func (c *PGListCmd) Run(env *Env) error {
	var groups map[string]mgmt.PlacementGroup
	printed, err := apiGet(env, "PlacementGroupsList", &groups)
	if err != nil || printed {
		return err
	}
	names := make([]string, 0, len(groups))
	for n := range groups {
		names = append(names, n)
	}
	sort.Strings(names)
	rows := [][]string{{"NAME", "DISKS"}}
	for _, n := range names {
		rows = append(rows, []string{n, dash(strings.Trim(fmt.Sprint(groups[n].Disks), "[]"))})
	}
	return table(env, rows)
}

// PGDescribeCmd is `keel placement-group describe`.
type PGDescribeCmd struct {
	Name string `arg:"" name:"NAME" help:"Placement group name."`
}

// Help is the long help of `keel placement-group describe`.
func (c *PGDescribeCmd) Help() string { return `Shows one placement group (PlacementGroupDescribe).` }

// Run describes.
func (c *PGDescribeCmd) Run(env *Env) error {
	var g mgmt.PlacementGroup
	printed, err := apiGet(env, "PlacementGroupDescribe/"+c.Name, &g)
	if err != nil || printed {
		return err
	}
	return table(env, [][]string{{"name", g.Name}, {"disks", dash(strings.Trim(fmt.Sprint(g.Disks), "[]"))}})
}

// PGUpdateCmd is `keel placement-group update`.
type PGUpdateCmd struct {
	Name   string `arg:"" name:"NAME" help:"Placement group name; created when missing."`
	Add    []int  `help:"Disk ids to add (comma-separated or repeated)." placeholder:"ID"`
	Remove []int  `help:"Disk ids to remove." placeholder:"ID"`
	Rename string `help:"New name (templates and volumes follow)." placeholder:"NEW"`
}

// Help is the long help of `keel placement-group update`.
func (c *PGUpdateCmd) Help() string {
	return `Creates or changes a placement group (PlacementGroupUpdate). Existing
volumes keep their disk sets; new allocations use the new membership.

Example:
  keel placement-group update ssd --add 101,102,201,202`
}

// Run updates.
func (c *PGUpdateCmd) Run(env *Env) error {
	b := map[string]any{}
	if len(c.Add) > 0 {
		b["addDisks"] = c.Add
	}
	if len(c.Remove) > 0 {
		b["rmDisks"] = c.Remove
	}
	if c.Rename != "" {
		b["rename"] = c.Rename
	}
	if _, err := apiPost(env, "PlacementGroupUpdate/"+c.Name, b); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "placement group %s updated\n", c.Name)
	return nil
}

// PGDeleteCmd is `keel placement-group delete`.
type PGDeleteCmd struct {
	Name string `arg:"" name:"NAME" help:"Placement group name."`
}

// Help is the long help of `keel placement-group delete`.
func (c *PGDeleteCmd) Help() string {
	return `Deletes a placement group (PlacementGroupDelete); refused while a template,
volume or snapshot names it.`
}

// Run deletes.
func (c *PGDeleteCmd) Run(env *Env) error {
	if _, err := apiPost(env, "PlacementGroupDelete/"+c.Name, nil); err != nil || env.Globals.JSON {
		return err
	}
	fmt.Fprintf(env.Stdout, "placement group %s deleted\n", c.Name)
	return nil
}
