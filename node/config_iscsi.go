package node

// ISCSIConfig configures the iSCSI target controller ([iscsi]).
type ISCSIConfig struct{}
