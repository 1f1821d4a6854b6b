package kubeinterop

import (
	"context"
	"strings"
	"testing"

	"github.com/meltemi-mesh/meltemi/test/kube/kubetest"
)

// TestCRDsValidate applies objects written as Aeraki's documentation writes them to the CRDs of
// api/crds, which must accept them, and objects their OpenAPI markers must refuse, naming the field.
func TestCRDsValidate(t *testing.T) {
	c := kubetest.Start(t)
	c.Apply(t, "crds", `
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: redis-cluster}
spec:
  host: [redis-cluster.redis.svc.cluster.local]
  settings: {opTimeout: 0.5s, readPolicy: PREFER_REPLICA, enableRedirection: true, maxUpstreamUnknownConnections: 50,
    auth: {plain: {password: testpassword}}}
  redis:
  - match: {key: {prefix: cluster}}
    route: {host: redis-cluster.redis.svc.cluster.local}
    mirror: [{route: {host: redis-single.redis.svc.cluster.local, port: 6379}, percentage: {value: 25}, excludeReadCommands: true}]
  faults: [{type: ERROR, percentage: {value: 10}, delay: 2s, commands: [GET]}]
---
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: redis-cluster}
spec:
  host: redis-cluster.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 5s, tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}}
      redis: {mode: CLUSTER, auth: {secret: {name: redis-credential, passwordField: password}}, discoveryEndpoints: [redis-0:6379]}
---
apiVersion: dubbo.aeraki.io/v1alpha1
kind: DubboAuthorizationPolicy
metadata: {name: demo}
spec:
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/dubbo/sa/dubbo-consumer]}}]
    to: [{operation: {interfaces: [org.apache.dubbo.samples.basic.api.DemoService], methods: [sayHello]}}]
`)
	tests := []struct{ name, object, field string }{
		{"unknown read policy", `{apiVersion: redis.aeraki.io/v1alpha1, kind: RedisService, metadata: {name: x, namespace: crds},
			spec: {host: [a], settings: {readPolicy: NEAREST}}}`, "spec.settings.readPolicy"},
		{"no host", `{apiVersion: redis.aeraki.io/v1alpha1, kind: RedisService, metadata: {name: x, namespace: crds},
			spec: {host: []}}`, "spec.host"},
		{"mirror over 100%", `{apiVersion: redis.aeraki.io/v1alpha1, kind: RedisService, metadata: {name: x, namespace: crds},
			spec: {host: [a], redis: [{route: {host: a}, mirror: [{route: {host: b}, percentage: {value: 150}}]}]}}`,
			"spec.redis[0].mirror[0].percentage.value"},
		{"two credentials", `{apiVersion: redis.aeraki.io/v1alpha1, kind: RedisDestination, metadata: {name: x, namespace: crds},
			spec: {host: a, trafficPolicy: {connectionPool: {redis: {auth: {plain: {password: p}, secret: {name: s}}}}}}}`,
			"spec.trafficPolicy.connectionPool.redis.auth"},
		{"unknown mode", `{apiVersion: redis.aeraki.io/v1alpha1, kind: RedisDestination, metadata: {name: x, namespace: crds},
			spec: {host: a, trafficPolicy: {connectionPool: {redis: {mode: SENTINEL}}}}}`, "spec.trafficPolicy.connectionPool.redis.mode"},
		{"unknown action", `{apiVersion: dubbo.aeraki.io/v1alpha1, kind: DubboAuthorizationPolicy, metadata: {name: x, namespace: crds},
			spec: {action: AUDIT}}`, "spec.action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Client.Create(context.Background(), kubetest.MustDecodeOne(t, tt.object))
			if err == nil || !strings.Contains(err.Error(), tt.field) {
				t.Errorf("created, or refused without naming %s: %v", tt.field, err)
			}
		})
	}
}
