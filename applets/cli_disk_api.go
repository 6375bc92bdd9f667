package applets

import (
	"fmt"
	"sort"
	"strconv"

	"keel/mgmt"
)

// DiskListCmd is `keel disk list`.
type DiskListCmd struct{}

// Help is the long help of `keel disk list`.
func (c *DiskListCmd) Help() string {
	return `Lists the cluster's disks as mgmt knows them (DisksList): id, server,
state (up, down, ejected), size, free space, objects, model, serial,
description. "keel disk list-local" lists the disks this node can see.`
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
	rows := [][]string{{"ID", "SERVER", "STATE", "SIZE", "FREE", "OBJECTS", "MODEL", "SERIAL", "DESCRIPTION"}}
	for _, d := range list {
		rows = append(rows, []string{itoa(d.ID), itoa(d.ServerID), d.State, humanSize(d.Size), humanSize(d.FreeBytes),
			fmt.Sprintf("%d/%d", d.ObjectsAllocated, d.ObjectsCount), dash(d.Model), dash(d.Serial), dash(d.Description)})
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
		{"disk generation", fmt.Sprint(d.DiskGeneration)}, {"generation left", fmt.Sprint(d.GenerationLeft)}})
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
