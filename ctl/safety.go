package ctl

import (
	"context"
	"fmt"

	"keel/mgmt/apiclient"
)

// StopVerdict is mgmt's answer to NodeStopCheck: whether the node's server
// may stop without some data losing its last up copy.
type StopVerdict struct {
	Safe        bool   `json:"safe"`
	Reason      string `json:"reason"`
	Maintenance bool   `json:"maintenance"`
}

// AskMgmt calls GET /ctrl/1.0/NodeStopCheck/<nodeID> on the management API.
func AskMgmt(ctx context.Context, c *apiclient.Client, nodeID int) (StopVerdict, error) {
	var v StopVerdict
	if _, err := c.Get(ctx, fmt.Sprintf("NodeStopCheck/%d", nodeID), nil, &v); err != nil {
		return StopVerdict{}, fmt.Errorf("ask mgmt at %s: %w", c.BaseURL, err)
	}
	return v, nil
}
