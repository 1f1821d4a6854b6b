package deploy

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Defaults of a rendering: the release the plain manifests are rendered as.
const (
	DefaultRelease   = "meltemi"
	DefaultNamespace = "meltemi-system"
	// KubeVersion is the Kubernetes version rendered for: the one the tests run against.
	KubeVersion = "v1.37.2"
)

// Options are the inputs of helm install besides the chart.
type Options struct {
	// Release and Namespace default to DefaultRelease and DefaultNamespace.
	Release, Namespace string
	// Values override the chart's values.yaml, as helm --values does.
	Values map[string]any
}

// Rendering is what helm install would create: the chart's CRDs, then its templates' objects in Helm's
// install order.
type Rendering struct {
	CRDs    []Document
	Objects []Document
}

// Document is one rendered object: the template it came from, its YAML, and the object.
type Document struct {
	Source string
	YAML   string
	Object *unstructured.Unstructured
}

// Render loads the chart in dir and renders it as helm install does: values checked against the chart's
// schema, the chart's kubeVersion range checked, templates executed, documents split and sorted by kind.
func Render(dir string, opts Options) (*Rendering, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	return RenderChart(chrt, opts)
}

// RenderChart is Render for a chart already loaded.
func RenderChart(chrt *chart.Chart, opts Options) (*Rendering, error) {
	if opts.Release == "" {
		opts.Release = DefaultRelease
	}
	if opts.Namespace == "" {
		opts.Namespace = DefaultNamespace
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: KubeVersion, Major: "1", Minor: "37"}
	if r := chrt.Metadata.KubeVersion; r != "" && !chartutil.IsCompatibleRange(r, KubeVersion) {
		return nil, fmt.Errorf("chart %s: kubeVersion %q excludes %s", chrt.Name(), r, KubeVersion)
	}
	values, err := chartutil.ToRenderValues(chrt, opts.Values,
		chartutil.ReleaseOptions{Name: opts.Release, Namespace: opts.Namespace, IsInstall: true}, caps)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(chrt, values)
	if err != nil {
		return nil, err
	}
	for name := range files {
		// NOTES.txt is printed, not applied; partials render to nothing.
		if !strings.HasSuffix(name, ".yaml") {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, err
	}
	if len(hooks) > 0 {
		return nil, fmt.Errorf("chart %s: hooks are not expected (%s)", chrt.Name(), hooks[0].Path)
	}
	out := &Rendering{}
	for _, m := range manifests {
		doc, err := document(m.Name, m.Content)
		if err != nil {
			return nil, err
		}
		out.Objects = append(out.Objects, doc)
	}
	crds := chrt.CRDObjects()
	slices.SortFunc(crds, func(a, b chart.CRD) int { return strings.Compare(a.Name, b.Name) })
	for _, c := range crds {
		parts := splitDocuments(string(c.File.Data))
		for i, part := range parts {
			source := c.Name
			if len(parts) > 1 {
				source = fmt.Sprintf("%s (document %d)", c.Name, i+1)
			}
			doc, err := document(source, part)
			if err != nil {
				return nil, err
			}
			out.CRDs = append(out.CRDs, doc)
		}
	}
	return out, nil
}

func document(source, content string) (Document, error) {
	// Through JSON, so that numbers are int64 as the API machinery has them; duplicate keys are errors.
	js, err := yaml.YAMLToJSONStrict([]byte(content))
	if err != nil {
		return Document{}, fmt.Errorf("%s: %w", source, err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		return Document{}, fmt.Errorf("%s: %w", source, err)
	}
	if obj.GetKind() == "" || obj.GetAPIVersion() == "" || obj.GetName() == "" {
		return Document{}, fmt.Errorf("%s: an object needs apiVersion, kind and metadata.name", source)
	}
	return Document{Source: source, YAML: strings.TrimSpace(content) + "\n", Object: obj}, nil
}

// splitDocuments splits a YAML stream on its document separators, dropping empty documents.
func splitDocuments(s string) []string {
	var out []string
	for _, part := range strings.Split("\n"+s, "\n---") {
		if strings.TrimSpace(stripComments(part)) != "" {
			out = append(out, part)
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// Find returns the rendered object of a kind and name, nil when there is none.
func (r *Rendering) Find(kind, name string) *unstructured.Unstructured {
	for _, d := range r.Objects {
		if d.Object.GetKind() == kind && d.Object.GetName() == name {
			return d.Object
		}
	}
	return nil
}

// Kinds lists the kinds rendered, in order, each once.
func (r *Rendering) Kinds() []string {
	var out []string
	for _, d := range r.Objects {
		if !slices.Contains(out, d.Object.GetKind()) {
			out = append(out, d.Object.GetKind())
		}
	}
	return out
}

// ManifestHeader opens deploy/manifests/meltemi.yaml.
const ManifestHeader = `# Meltemi's controller as the Helm chart deploy/helm/meltemi renders it with its default values
# (release %s, namespace %s), with the namespace and the CRDs first: kubectl apply --server-side -f.
# Generated by make manifests; do not edit.
`

// Manifest is the plain manifest of a rendering: the namespace, the CRDs, then the chart's objects.
func (r *Rendering) Manifest(namespace string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, ManifestHeader, DefaultRelease, namespace)
	fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", namespace)
	for _, d := range slices.Concat(r.CRDs, r.Objects) {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s", path.Join("meltemi", sourceName(d.Source)), stripLeadingSeparators(d.YAML))
	}
	return b.Bytes()
}

// sourceName drops the chart name Helm puts in front of template paths.
func sourceName(s string) string { return strings.TrimPrefix(s, "meltemi/") }

func stripLeadingSeparators(s string) string {
	for {
		t := strings.TrimLeft(s, "\n")
		if !strings.HasPrefix(t, "---") {
			return t
		}
		s = strings.TrimPrefix(t, "---")
	}
}
