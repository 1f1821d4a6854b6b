package dubbopeer

import (
	"fmt"
	"io"
	"os"
	"sync"

	getty "github.com/apache/dubbo-getty"
	gostlogger "github.com/dubbogo/gost/log/logger"
)

// quietLogger replaces the loggers of dubbo-go and getty, which print at INFO to stdout: it drops everything
// below error and writes errors to w (nowhere when w is nil).
type quietLogger struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *quietLogger) Info(...any)           {}
func (l *quietLogger) Warn(...any)           {}
func (l *quietLogger) Debug(...any)          {}
func (l *quietLogger) Infof(string, ...any)  {}
func (l *quietLogger) Warnf(string, ...any)  {}
func (l *quietLogger) Debugf(string, ...any) {}

func (l *quietLogger) Error(args ...any) {
	if l.w != nil {
		l.write(fmt.Sprint(args...))
	}
}

func (l *quietLogger) Errorf(format string, args ...any) {
	if l.w != nil {
		l.write(fmt.Sprintf(format, args...))
	}
}

// Fatal keeps dubbo-go's meaning: the process cannot go on.
func (l *quietLogger) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(1)
}

func (l *quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func (l *quietLogger) write(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintln(l.w, "dubbo-go error:", msg)
}

// quiet installs a quietLogger writing errors to w. dubbo-go resets its loggers whenever an instance is
// created, so callers install it after dubbo.NewInstance.
func quiet(w io.Writer) {
	l := &quietLogger{w: w}
	gostlogger.SetLogger(l)
	getty.SetLogger(l)
}
