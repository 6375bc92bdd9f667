package node

// StorageNetConfig describes this node's storage network, from which
// iface-genconf writes the OS network configuration ([storage_net]). The
// node's address in each network is the network's base address + node.id +
// address_offset.
type StorageNetConfig struct {
	Interfaces    []string `toml:"interfaces" help:"physical interfaces of the storage network, e.g. [\"eth2\", \"eth3\"]"`
	Mode          string   `toml:"mode" enum:"exclusive,active-backup,lacp" help:"exclusive: each interface on its own network; active-backup or lacp: the interfaces form one bond"`
	Bond          string   `toml:"bond" help:"name of the bond in active-backup and lacp modes"`
	MTU           int      `toml:"mtu" min:"576" max:"9216" help:"MTU of the storage interfaces, the bond and the VLAN interfaces on them"`
	VLAN          int      `toml:"vlan" min:"0" max:"4094" help:"VLAN of the storage network; 0 means untagged"`
	Networks      []string `toml:"networks" help:"storage networks as CIDR: one per interface in exclusive mode, exactly one with a bond"`
	AddressOffset int      `toml:"address_offset" min:"0" max:"65535" help:"added to node.id to get this node's address in the storage networks"`
	ISCSIIPOffset int      `toml:"iscsi_ip_offset" min:"0" max:"65535" help:"added to node.id to get this node's address in the iSCSI portal-group networks (--iscsi-ip-offset overrides)"`
}
