package meltemicmd

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

func newVersionCommand(p Plugins) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version and the protocols this binary speaks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			codecs, err := p.codecs()
			if err != nil {
				return err
			}
			v := version
			if info, ok := debug.ReadBuildInfo(); ok && v == "dev" && info.Main.Version != "" &&
				info.Main.Version != "(devel)" {
				v = info.Main.Version
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "meltemi %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Fprintf(out, "codecs: %s\n", strings.Join(codecs.Names(), ", "))
			return nil
		},
	}
}
