package brpcinterop

import (
	"bytes"
	"io"
	"log"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// pbrpc logs every call it makes through the standard logger ("[client-101] ... process cost ...");
	// tens of thousands of those would bury the lines that matter when a test fails. Everything else it
	// logs is kept.
	log.SetOutput(dropLines{w: os.Stderr, prefix: []byte("[client-101]")})
	os.Exit(m.Run())
}

// dropLines writes each log line to w unless its message starts with prefix.
type dropLines struct {
	w      io.Writer
	prefix []byte
}

func (d dropLines) Write(p []byte) (int, error) {
	// The standard logger writes one line per call, its message after the date and time.
	if _, msg, ok := bytes.Cut(p, []byte(" ")); ok {
		if _, msg, ok = bytes.Cut(msg, []byte(" ")); ok && bytes.HasPrefix(msg, d.prefix) {
			return len(p), nil
		}
	}
	return d.w.Write(p)
}
