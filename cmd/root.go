// Package meltemicmd is the meltemi command line: the control plane, the proxy and the tools around them, as
// subcommands of one binary. A binary that adds its own codecs or filters calls Main with them, the way
// cmd/meltemi calls it with the built-in ones:
//
//	func main() {
//		plugins := meltemicmd.Builtins()
//		plugins.Codecs = append(plugins.Codecs, myproto.Registration())
//		meltemicmd.Main(plugins)
//	}
package meltemicmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// Main runs the meltemi command line with the given codecs and filters, and exits.
func Main(p Plugins) {
	if err := NewRootCommand(p).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "meltemi:", err)
		os.Exit(1)
	}
}

// NewRootCommand returns the meltemi command with all its subcommands, for a binary with plugins p.
func NewRootCommand(p Plugins) *cobra.Command {
	root := &cobra.Command{
		Use:           "meltemi",
		Short:         "Service mesh traffic management for Dubbo, Thrift, bRPC, tRPC and other layer-7 protocols",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCommand(p))
	root.AddCommand(newProxyCommand(p))
	root.AddCommand(newControllerCommand(p))
	root.AddCommand(newMeshCommand(p))
	root.AddCommand(newValidateCommand(p))
	root.AddCommand(newCompatCommand(p))
	return root
}
