package v1alpha1_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// Aeraki's kinds as its documentation writes them; durations in the canonical form protobuf's
// encoders write, which is also the form they are re-encoded in.
const (
	aerakiRedisService = `
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisService
metadata: {name: redis-cluster, namespace: redis}
spec:
  host: [redis-cluster.redis.svc.cluster.local]
  settings:
    caseInsensitive: true
    opTimeout: 0.500s
    enableCommandStats: true
    maxBufferSizeBeforeFlush: 1024
    bufferFlushTimeout: 0.003s
    maxUpstreamUnknownConnections: 50
    enableHashtagging: true
    enableRedirection: true
    readPolicy: PREFER_REPLICA
    auth: {plain: {password: testpassword, username: admin}}
  redis:
  - match: {key: {prefix: cluster, removePrefix: true}}
    route: {host: redis-cluster.redis.svc.cluster.local, port: 6379}
    mirror: [{route: {host: redis-single.redis.svc.cluster.local}, percentage: {value: 25}, excludeReadCommands: true}]
  - route: {host: redis-single.redis.svc.cluster.local}
  faults: [{type: ERROR, percentage: {value: 10}, delay: 2s, commands: [GET]}]
`
	aerakiRedisDestination = `
apiVersion: redis.aeraki.io/v1alpha1
kind: RedisDestination
metadata: {name: redis-cluster, namespace: redis}
spec:
  host: redis-cluster.redis.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 5s, tcpKeepalive: {probes: 3, time: 7200s, interval: 75s},
        maxConnectionDuration: 3600s, idleTimeout: 300s}
      redis: {mode: CLUSTER, auth: {secret: {name: redis-credential, passwordField: password, usernameField: user}},
        discoveryEndpoints: [redis-0:6379]}
`
)

func TestAerakiManifestsRoundTrip(t *testing.T) {
	for _, tt := range []struct {
		name     string
		manifest string
		obj      any
	}{
		{"RedisService", aerakiRedisService, &v1alpha1.RedisService{}},
		{"RedisDestination", aerakiRedisDestination, &v1alpha1.RedisDestination{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := yaml.UnmarshalStrict([]byte(tt.manifest), tt.obj); err != nil {
				t.Fatal(err)
			}
			got, err := json.Marshal(tt.obj)
			if err != nil {
				t.Fatal(err)
			}
			want, err := yaml.YAMLToJSON([]byte(tt.manifest))
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			json.Unmarshal(got, &g)
			json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("re-encoded\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestDecodedFields(t *testing.T) {
	var rs v1alpha1.RedisService
	if err := yaml.UnmarshalStrict([]byte(aerakiRedisService), &rs); err != nil {
		t.Fatal(err)
	}
	s := rs.Spec.Settings
	if s.OpTimeout.Duration != 500*time.Millisecond || s.BufferFlushTimeout.Duration != 3*time.Millisecond ||
		*s.MaxUpstreamUnknownConnections != 50 || s.ReadPolicy != v1alpha1.ReadPreferReplica || s.Auth.Plain.Username != "admin" {
		t.Errorf("settings %+v", s)
	}
	if f := rs.Spec.Faults[0]; f.Type != v1alpha1.FaultError || f.Delay.Duration != 2*time.Second || f.Percentage.Value != 10 {
		t.Errorf("fault %+v", f)
	}
	copied := rs.DeepCopy()
	copied.Spec.Redis[0].Mirror[0].Route.Host = "changed"
	if rs.Spec.Redis[0].Mirror[0].Route.Host == "changed" {
		t.Error("DeepCopy shares the mirrors")
	}
}
