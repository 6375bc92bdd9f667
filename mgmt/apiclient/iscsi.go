package apiclient

// The iSCSI configuration as the API serves it (GET iSCSIConfig), with the
// field names of the StorPool API. keel_iscsi decodes it with these types;
// mgmt encodes it with them.

// ISCSIConfig is the data of GET iSCSIConfig.
type ISCSIConfig struct {
	ISCSI ISCSIConfigData `json:"iscsi"`
}

// ISCSIConfigData is the cluster's iSCSI configuration. Map keys are the
// objects' ids in decimal.
type ISCSIConfigData struct {
	BaseName     string                      `json:"baseName"`
	Initiators   map[string]ISCSIInitiator   `json:"initiators"`
	PortalGroups map[string]ISCSIPortalGroup `json:"portalGroups"`
	Targets      map[string]ISCSITarget      `json:"targets"`
}

// ISCSIInitiator is an initiator allowed to log in.
type ISCSIInitiator struct {
	Name     string `json:"name"`
	Username string `json:"username"` // "" means no CHAP
	Secret   string `json:"secret"`
	// Nets are CIDR networks the initiator may connect from; empty
	// means any.
	Nets    []string      `json:"nets"`
	Exports []ISCSIExport `json:"exports"`
}

// ISCSIExport is one export of a target to an initiator in a portal group.
type ISCSIExport struct {
	PortalGroup string `json:"portalGroup"`
	Target      string `json:"target"`
}

// ISCSIPortalGroup is a named set of portals.
type ISCSIPortalGroup struct {
	Name     string           `json:"name"`
	Networks []ISCSIPGNetwork `json:"networks"`
	Portals  []ISCSIPortal    `json:"portals"`
}

// ISCSIPGNetwork is a network a portal group is reached on.
type ISCSIPGNetwork struct {
	Address string `json:"address"`
	Prefix  int    `json:"prefix"`
}

// ISCSIPortal is an address a controller listens on.
type ISCSIPortal struct {
	Controller int    `json:"controller"`
	IP         string `json:"ip"`
	Port       int    `json:"port"`
}

// ISCSITarget is the target of one volume.
type ISCSITarget struct {
	// CurrentControllerID serves the target (0 while it is not exported).
	CurrentControllerID int    `json:"currentControllerId"`
	Name                string `json:"name"`
	Volume              string `json:"volume"`
	// GlobalID is the volume's globalId (keel extension).
	GlobalID string `json:"globalId"`
}

// ISCSISessionInfo is one live session, as controllers report it
// (iSCSISessionsInfo).
type ISCSISessionInfo struct {
	Status       string           `json:"status"`
	ControllerID int              `json:"controllerId"`
	ConnectionID *int             `json:"connectionId,omitempty"`
	ISID         string           `json:"ISID,omitempty"`
	TimeCreated  int64            `json:"timeCreated,omitempty"`
	Target       string           `json:"target,omitempty"`
	Initiator    string           `json:"initiator,omitempty"`
	TCP          *ISCSISessionTCP `json:"tcp,omitempty"`
}

// ISCSISessionTCP is the TCP connection of a session.
type ISCSISessionTCP struct {
	PortalIP      string `json:"portalIP"`
	PortalPort    int    `json:"portalPort"`
	InitiatorIP   string `json:"initiatorIP"`
	InitiatorPort int    `json:"initiatorPort"`
}

// ISCSIInterfaceInfo is a network interface that carries portals of a
// controller (iSCSInterfacesInfo).
type ISCSIInterfaceInfo struct {
	Port                 int    `json:"port"` // the portal's TCP port
	State                string `json:"state"`
	InterfaceName        string `json:"interfaceName"`
	MAC                  string `json:"MAC"`
	ResolveInterfaceName string `json:"resolveInterfaceName"`
}

// ISCSIControllerReport is the body of the keel extension POST
// iSCSIReport: what a controller serves now. It is committed
// only when it differs from the last one.
type ISCSIControllerReport struct {
	ControllerID int                  `json:"controllerId"`
	Sessions     []ISCSISessionInfo   `json:"sessions"`
	Interfaces   []ISCSIInterfaceInfo `json:"interfaces"`
}

// ISCSIClientBase is added to a controller id to give the client id its
// volume attachments are made for: controller c serves the volumes
// attached to client ISCSIClientBase+c, so fencing treats it as any other
// block client.
const ISCSIClientBase = 0x4000
