// Command render writes the plain manifests, deploy/manifests/meltemi.yaml, from the Helm chart with its
// default values: what make manifests runs.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/meltemi-mesh/meltemi/test/deploy"
)

func main() {
	chart := flag.String("chart", "../../deploy/helm/meltemi", "the chart's folder")
	out := flag.String("o", "../../deploy/manifests/meltemi.yaml", "the file to write")
	flag.Parse()
	r, err := deploy.Render(*chart, deploy.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
	if err := os.WriteFile(*out, r.Manifest(deploy.DefaultNamespace), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
