package client

import (
	"testing"

	"keel/server"
)

// TestBlockStateValues: BlockStatus reads READ_META states with the
// server's values.
func TestBlockStateValues(t *testing.T) {
	if blockUnwritten != server.BlockUnwritten || blockData != server.BlockData || blockZero != server.BlockZero {
		t.Fatalf("client block states %d/%d/%d, server's %d/%d/%d", blockUnwritten, blockData, blockZero,
			server.BlockUnwritten, server.BlockData, server.BlockZero)
	}
}
