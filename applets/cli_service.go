package applets

import (
	"fmt"
	"sort"
	"strconv"
)

// ServiceCmd groups the service commands.
type ServiceCmd struct {
	List ServiceListCmd `cmd:"" help:"List the cluster's services (mgmt, servers, clients, bridges, iSCSI) and whether they run."`
}

// ServiceListCmd is `keel service list`.
type ServiceListCmd struct{}

// Help is the long help of `keel service list`.
func (c *ServiceListCmd) Help() string {
	return `Shows ServicesList: every mgmt member (active = the Raft leader) and every
registered server, client, bridge and iSCSI controller, running or down. A
service is down when it sent no heartbeat for mgmt.service_timeout. Exit
status 1 when some service is down.`
}

// Run lists.
func (c *ServiceListCmd) Run(env *Env) error {
	var st map[string]any
	printed, err := apiGet(env, "ServicesList", &st)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"TYPE", "ID", "NODE", "STATUS", "VERSION", "STARTED"}}
	down := 0
	for _, typ := range []string{"mgmt", "servers", "clients", "bridges", "iscsi"} {
		m, _ := st[typ].(map[string]any)
		ids := make([]int, 0, len(m))
		for k := range m {
			n, _ := strconv.Atoi(k)
			ids = append(ids, n)
		}
		sort.Ints(ids)
		for _, id := range ids {
			e, _ := m[strconv.Itoa(id)].(map[string]any)
			status := fmt.Sprint(e["status"])
			if a, ok := e["active"].(bool); ok && a {
				status += " (active)"
			}
			if e["status"] == "down" {
				down++
			}
			started := "-"
			if t, ok := e["startTime"].(float64); ok && t > 0 {
				started = fmt.Sprint(int64(t))
			}
			rows = append(rows, []string{typ, itoa(id), fmt.Sprint(e["nodeId"]), status, dash(fmt.Sprint(e["version"])), started})
		}
	}
	if err := table(env, rows); err != nil {
		return err
	}
	if down > 0 {
		return fmt.Errorf("%d services are down", down)
	}
	return nil
}

// KVCmd groups the KV store commands.
type KVCmd struct {
	Get    KVGetCmd    `cmd:"" help:"Print a key's value."`
	Set    KVSetCmd    `cmd:"" help:"Set a key."`
	List   KVListCmd   `cmd:"" help:"List every key and value."`
	Delete KVDeleteCmd `cmd:"" help:"Delete a key."`
}

// KVGetCmd is `keel kv get`.
type KVGetCmd struct {
	Key string `arg:"" name:"KEY" help:"Key."`
}

// Help is the long help of `keel kv get`.
func (c *KVGetCmd) Help() string {
	return `Prints the value of KEY in the cluster's replicated KV store (KVGet); exit
status 1 when it does not exist.`
}

// Run gets.
func (c *KVGetCmd) Run(env *Env) error {
	var p struct {
		Value string `json:"value"`
	}
	printed, err := apiGet(env, "KVGet/"+c.Key, &p)
	if err != nil || printed {
		return err
	}
	fmt.Fprintln(env.Stdout, p.Value)
	return nil
}

// KVSetCmd is `keel kv set`.
type KVSetCmd struct {
	Key   string `arg:"" name:"KEY" help:"Key (up to 200 bytes)."`
	Value string `arg:"" name:"VALUE" help:"Value (up to 64 KiB)."`
}

// Help is the long help of `keel kv set`.
func (c *KVSetCmd) Help() string { return `Sets KEY to VALUE in the replicated KV store (KVSet).` }

// Run sets.
func (c *KVSetCmd) Run(env *Env) error {
	_, err := apiPost(env, "KVSet", map[string]string{"key": c.Key, "value": c.Value})
	return err
}

// KVListCmd is `keel kv list`.
type KVListCmd struct{}

// Help is the long help of `keel kv list`.
func (c *KVListCmd) Help() string { return `Lists every key and value of the KV store (KVList).` }

// Run lists.
func (c *KVListCmd) Run(env *Env) error {
	var list []struct{ Key, Value string }
	printed, err := apiGet(env, "KVList", &list)
	if err != nil || printed {
		return err
	}
	rows := [][]string{{"KEY", "VALUE"}}
	for _, p := range list {
		rows = append(rows, []string{p.Key, p.Value})
	}
	return table(env, rows)
}

// KVDeleteCmd is `keel kv delete`.
type KVDeleteCmd struct {
	Key string `arg:"" name:"KEY" help:"Key."`
}

// Help is the long help of `keel kv delete`.
func (c *KVDeleteCmd) Help() string { return `Deletes KEY from the KV store (KVDelete).` }

// Run deletes.
func (c *KVDeleteCmd) Run(env *Env) error {
	_, err := apiPost(env, "KVDelete/"+c.Key, nil)
	return err
}
