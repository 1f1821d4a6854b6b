package thriftinterop

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// Started as a Kitex server by startKitexServer, the binary serves and never returns.
	runKitexServerIfAsked()
	os.Exit(m.Run())
}
