package server

import (
	"os"
	"testing"

	"keel/internal/testbin"
)

func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }
