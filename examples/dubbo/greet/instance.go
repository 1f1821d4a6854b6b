package greet

import (
	"sync"

	dubbo "dubbo.apache.org/dubbo-go/v3"
	"dubbo.apache.org/dubbo-go/v3/graceful_shutdown"
	_ "dubbo.apache.org/dubbo-go/v3/imports" // dubbo-go's protocols, filters and serialisers register themselves
	"dubbo.apache.org/dubbo-go/v3/logger"
)

var (
	instanceOnce sync.Once
	instance     *dubbo.Instance
	instanceErr  error
)

// dubboInstance returns the process's dubbo-go instance, which holds the application-wide settings that
// providers and consumers are made from. There is one per process: creating an instance resets dubbo-go's
// global loggers and other process-wide state.
func dubboInstance(name string) (*dubbo.Instance, error) {
	instanceOnce.Do(func() {
		instance, instanceErr = dubbo.NewInstance(
			dubbo.WithName(name),
			// With local metadata (the default), dubbo-go's internal MetadataService first binds the
			// provider's port on every interface, and exporting the service on one address then fails with
			// "address already in use". There is no registry to report to either way.
			dubbo.WithRemoteMetadata(),
			// Otherwise dubbo-go catches Ctrl-C itself and exits the process when its graceful-shutdown wait
			// is over, before the program can stop what it started.
			dubbo.WithShutdown(graceful_shutdown.WithoutInternalSignal()),
			dubbo.WithLogger(logger.WithLevel("error")),
		)
		quietLogs()
	})
	return instance, instanceErr
}
