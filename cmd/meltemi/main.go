// Command meltemi is the Meltemi service mesh for layer-7 protocols beyond HTTP: its control plane, its
// proxy, and the tools around them, as subcommands of one binary.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meltemi:", err)
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "meltemi",
		Short:         "Service mesh traffic management for Dubbo, Thrift, bRPC, tRPC and other layer-7 protocols",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand())
	root.AddCommand(newProxyCommand())
	root.AddCommand(newControllerCommand())
	root.AddCommand(newMeshCommand())
	root.AddCommand(newValidateCommand())
	return root
}
