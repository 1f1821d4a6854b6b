package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/meltemi-mesh/meltemi/codec/dubbo"
	"github.com/meltemi-mesh/meltemi/proxy"
	"github.com/meltemi-mesh/meltemi/test/e2e/dubbopeer"
	"github.com/meltemi-mesh/meltemi/test/meshtest"
)

// The service the test providers stand for, as a mesh would name it.
const (
	greetHost      = "greet.default.svc.cluster.local"
	greetName      = "greet"
	greetNamespace = "default"
	inbound        = "dubbo-in" // the listener's name, also its stat prefix
)

// greetCluster returns a cluster of the greet service. A non-empty subset keeps only the endpoints whose
// version label matches, the way Istio's DestinationRule subsets do.
func greetCluster(subset string, endpoints ...proxy.Endpoint) proxy.Cluster {
	c := proxy.Cluster{
		Name:      "outbound|20880|" + subset + "|" + greetHost,
		Service:   proxy.Service{Host: greetHost, Name: greetName, Namespace: greetNamespace},
		Endpoints: endpoints,
	}
	if subset != "" {
		c.Subset = map[string]string{"version": subset}
	}
	return c
}

// endpointOf describes a provider as an endpoint labelled with its version.
func endpointOf(p *dubbopeer.Provider) proxy.Endpoint {
	return proxy.Endpoint{Address: p.Addr, Labels: map[string]string{"app": greetName, "version": p.Version}}
}

// dubboListener returns a Dubbo listener on a loopback address of its own, port chosen by the kernel.
func dubboListener(name string, routes ...proxy.Route) proxy.Listener {
	return proxy.Listener{
		Name:    name,
		Address: dubbopeer.NextLoopback() + ":0",
		Codec:   proxy.CodecConfig{Name: dubbo.Name},
		Routes:  proxy.RouteConfig{Name: "greet", Routes: routes},
	}
}

// toCluster is a catch-all route to one cluster.
func toCluster(cluster string) proxy.Route { return proxy.Route{Name: "all", Cluster: cluster} }

// startProxy builds a proxy with the Dubbo codec and gives it cfg.
func startProxy(t testing.TB, cfg *proxy.Config) *meshtest.Proxy {
	t.Helper()
	return meshtest.StartProxy(t, cfg, dubbo.Registration())
}

// ctxTimeout returns a context for one step of a test.
func ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
