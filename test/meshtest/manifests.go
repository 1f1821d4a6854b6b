package meshtest

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
)

// Service describes a meta-protocol service to the mesh: a ServiceEntry with one port, whose endpoints are
// real servers labelled by version, and a DestinationRule with a subset per version.
type Service struct {
	// Name names the ServiceEntry and DestinationRule; App is the endpoints' app label (Name when empty).
	Name, App string
	// Host is the service's host name, which MetaRouters and destinations refer to.
	Host string
	// Addresses are the addresses clients dial; the proxy binds Port on each in local mode.
	Addresses []string
	Port      int
	// Protocol names the codec in the port name: tcp-metaprotocol-<Protocol>.
	Protocol string
	// Endpoints are the servers.
	Endpoints []Endpoint
	// TrafficPolicy is the DestinationRule's trafficPolicy as YAML, its lines indented by four spaces
	// ("    loadBalancer: ..."); none when empty.
	TrafficPolicy string
}

// Endpoint is a server of a Service: its host:port and the version label its subset selects.
type Endpoint struct {
	Addr, Version string
}

// YAML renders the ServiceEntry and the DestinationRule, a subset per distinct endpoint version in order.
func (s Service) YAML(t testing.TB) string {
	t.Helper()
	portName := "tcp-metaprotocol-" + s.Protocol
	app := s.App
	if app == "" {
		app = s.Name
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: %s\nspec:\n  hosts:\n  - %s\n  addresses:\n",
		s.Name, s.Host)
	for _, a := range s.Addresses {
		fmt.Fprintf(&b, "  - %s\n", a)
	}
	fmt.Fprintf(&b, "  ports:\n  - number: %d\n    name: %s\n    protocol: TCP\n  resolution: STATIC\n  location: MESH_INTERNAL\n  endpoints:\n",
		s.Port, portName)
	var versions []string
	for _, e := range s.Endpoints {
		host, port, err := net.SplitHostPort(e.Addr)
		if err != nil {
			t.Fatalf("endpoint address %q: %v", e.Addr, err)
		}
		fmt.Fprintf(&b, "  - address: %s\n    ports:\n      %s: %s\n    labels:\n      app: %s\n      version: %s\n",
			host, portName, port, app, e.Version)
		if !slices.Contains(versions, e.Version) {
			versions = append(versions, e.Version)
		}
	}
	fmt.Fprintf(&b, "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: %s\nspec:\n  host: %s\n",
		s.Name, s.Host)
	if s.TrafficPolicy != "" {
		fmt.Fprintf(&b, "  trafficPolicy:\n%s", strings.TrimRight(s.TrafficPolicy, "\n")+"\n")
	}
	b.WriteString("  subsets:\n")
	for _, v := range versions {
		fmt.Fprintf(&b, "  - name: %s\n    labels:\n      version: %s\n", v, v)
	}
	return b.String()
}

// Router renders a MetaRouter for the service with routes, a YAML list whose items are indented by two
// spaces ("  - name: ...").
func (s Service) Router(routes string) string {
	return fmt.Sprintf("apiVersion: metaprotocol.aeraki.io/v1alpha1\nkind: MetaRouter\nmetadata:\n  name: %s\nspec:\n  hosts:\n  - %s\n  routes:\n%s",
		s.Name, s.Host, routes)
}
