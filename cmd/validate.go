package meltemicmd

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meltemi-mesh/meltemi/codec"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/file"
)

// errInvalidConfig makes validate exit with status 1 once the problems are printed.
var errInvalidConfig = errors.New("the config has errors")

func newValidateCommand(p Plugins) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "validate -f DIR",
		Short: "Check a folder of manifests and show what it serves",
		Long: "Reads the manifests of a folder as the local mesh would and prints every problem as\n" +
			"\"file: kind namespace/name: field: message\", then the meta-protocol services it serves.\n" +
			"Exits with status 1 if there is any error; warnings alone do not fail.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reg, err := p.codecs()
			if err != nil {
				return err
			}
			u, err := file.New(dir, file.Options{Model: model.Options{Codecs: codecsOf(reg), Local: true}}).Scan()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range u.Problems {
				fmt.Fprintln(out, p)
			}
			if len(u.Problems) > 0 {
				fmt.Fprintln(out)
			}
			printServed(out, u.Snapshot)
			errs, warns := model.Count(u.Problems)
			fmt.Fprintf(out, "\n%s, %s\n", plural(errs, "error"), plural(warns, "warning"))
			if errs > 0 {
				return errInvalidConfig
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "filename", "f", "", "folder of YAML manifests (or one file) to check")
	_ = cmd.MarkFlagRequired("filename")
	return cmd
}

// codecsOf lists a registry's codecs by application protocol, the form the model takes them in.
func codecsOf(reg *codec.Registry) model.Codecs {
	codecs := model.Codecs{}
	for _, name := range reg.Names() {
		if r, ok := reg.Lookup(name); ok {
			codecs[strings.ToLower(r.Protocol)] = r.Name
		}
	}
	return codecs
}

// printServed describes each meta-protocol service: where it listens, what it speaks, where its
// requests go.
func printServed(out io.Writer, snap *model.Snapshot) {
	services := snap.MetaProtocolServices()
	if len(services) == 0 {
		fmt.Fprintln(out, "No meta-protocol service is served.")
		return
	}
	fmt.Fprintln(out, "Served meta-protocol services:")
	listeners := map[*model.Port][]string{}
	for _, l := range snap.Listeners {
		listeners[l.Port] = append(listeners[l.Port], l.Address.String())
	}
	for _, svc := range services {
		fmt.Fprintf(out, "  %s (%s)\n", svc.Host, svc.Entry.Key())
		var addrs []string
		for _, a := range svc.Addresses {
			s := a.IP.String()
			if a.Allocated {
				s += " (allocated)"
			}
			addrs = append(addrs, s)
		}
		fmt.Fprintf(out, "    addresses: %s\n", orNone(addrs))
		for _, p := range svc.Ports {
			if !p.MetaProtocol() {
				continue
			}
			fmt.Fprintf(out, "    port %d %s: %s (%s), listening on %s\n", p.Number, p.Name, p.App, p.Codec, orNone(listeners[p]))
			var eps []string
			for _, ep := range p.Endpoints {
				eps = append(eps, fmt.Sprintf("%s:%d%s", ep.Address, ep.Port, labelString(ep.Labels)))
			}
			fmt.Fprintf(out, "      endpoints: %s\n", orNone(eps))
		}
		if len(svc.Subsets) > 0 {
			var subsets []string
			for _, s := range svc.Subsets {
				subsets = append(subsets, s.Name+labelString(s.Labels))
			}
			fmt.Fprintf(out, "    subsets: %s\n", strings.Join(subsets, ", "))
		}
		if lb := svc.LoadBalancer; lb.Policy != model.LBDefault {
			s := string(lb.Policy)
			if lb.HashKey != "" {
				s += " on " + lb.HashKey
			}
			fmt.Fprintf(out, "    load balancing: %s\n", s)
		}
		if svc.Router != nil {
			fmt.Fprintf(out, "    router: %s\n", svc.Router.Key())
		}
	}
}

func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return " {" + strings.Join(kv, ",") + "}"
}

func orNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
