package trpc

import (
	"os"
	"testing"

	"trpc.group/trpc-go/trpc-go/log"
)

func TestMain(m *testing.M) {
	// trpc-go logs every server start and close, and its errors, to stdout at debug level: keep only what is
	// fatal, so that `go test` output stays the tests' own.
	log.SetLogger(log.NewZapLog(log.Config{{Writer: log.OutputConsole, Formatter: "console", Level: "fatal"}}))
	os.Exit(m.Run())
}
