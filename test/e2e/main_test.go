package e2e

import (
	"os"
	"testing"

	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
)

func TestMain(m *testing.M) {
	// The harness re-executes this binary to run providers; in that mode RunProvider never returns.
	dubbopeer.RunProvider()
	code := m.Run()
	dubbopeer.CloseConsumers()
	os.Exit(code)
}
