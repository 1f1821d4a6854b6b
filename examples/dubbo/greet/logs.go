package greet

import (
	"fmt"
	"io"
	"os"
	"sync"

	getty "github.com/apache/dubbo-getty"
	gostlogger "github.com/dubbogo/gost/log/logger"
)

// quietLogger stands in for the loggers of dubbo-go and of getty (its network library), which print every
// connection and export at INFO level to stdout and would bury the sample's own output. It drops everything
// below error level and writes errors to w.
type quietLogger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *quietLogger) Debug(...any)          {}
func (l *quietLogger) Debugf(string, ...any) {}
func (l *quietLogger) Info(...any)           {}
func (l *quietLogger) Infof(string, ...any)  {}
func (l *quietLogger) Warn(...any)           {}
func (l *quietLogger) Warnf(string, ...any)  {}

func (l *quietLogger) Error(args ...any) { l.write(fmt.Sprint(args...)) }

func (l *quietLogger) Errorf(format string, args ...any) { l.write(fmt.Sprintf(format, args...)) }

// Fatal keeps its meaning for dubbo-go: the process cannot go on.
func (l *quietLogger) Fatal(args ...any) {
	l.write(fmt.Sprint(args...))
	os.Exit(1)
}

func (l *quietLogger) Fatalf(format string, args ...any) {
	l.write(fmt.Sprintf(format, args...))
	os.Exit(1)
}

func (l *quietLogger) write(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, "dubbo-go:", msg)
}

// quietLogs installs a quietLogger that writes errors to stderr. dubbo-go sets up its own loggers again
// whenever an instance is created, so this must run after dubbo.NewInstance.
func quietLogs() {
	l := &quietLogger{w: os.Stderr}
	gostlogger.SetLogger(l)
	getty.SetLogger(l)
}
