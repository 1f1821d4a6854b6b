package status

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/xds"
)

var (
	t0  = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	key = model.Key{Kind: model.KindMetaRouter, Namespace: "shop", Name: "orders"}
)

// router is a cluster MetaRouter of generation gen, as the kube source reads it.
func router(k model.Key, gen int64) *model.MetaRouter {
	origin := model.ClusterOrigin("kube", k, t0)
	origin.Generation = gen
	return &model.MetaRouter{Meta: model.Meta{Kind: k.Kind, Namespace: k.Namespace, Name: k.Name, Origin: origin},
		Spec: &v1alpha1.MetaRouterSpec{Hosts: []string{"orders.example"}}}
}

func problem(k model.Key, gen int64, sev model.Severity, reason model.Reason, field, msg string) model.Problem {
	origin := model.ClusterOrigin("kube", k, t0)
	origin.Generation = gen
	return model.Problem{Origin: origin, Key: k, Field: field, Message: msg, Severity: sev, Reason: reason}
}

func update(served []model.Object, problems ...model.Problem) source.Update {
	var objs model.Objects
	for _, o := range served {
		objs.Add(o)
	}
	return source.Update{Snapshot: &model.Snapshot{Version: 1, Objects: objs}, Problems: problems}
}

func TestConditions(t *testing.T) {
	type cond struct{ status, reason, message string }
	tests := []struct {
		name               string
		update             source.Update
		gen                int64
		acked, connected   int
		accepted, programd cond
	}{
		{"served and acknowledged", update([]model.Object{router(key, 2)}), 2, 3, 3,
			cond{"True", "Accepted", "valid, and in effect"}, cond{"True", "Programmed", "every connected proxy"}},
		{"not every proxy has it", update([]model.Object{router(key, 2)}), 2, 1, 3,
			cond{"True", "Accepted", ""}, cond{"False", "Pending", "not every connected proxy"}},
		{"no proxies", update([]model.Object{router(key, 2)}), 2, 0, 0,
			cond{"True", "Accepted", ""}, cond{"False", "NoProxies", "no proxy is connected"}},
		{"warnings are told", update([]model.Object{router(key, 2)},
			problem(key, 2, model.SeverityWarning, "", "spec.localRateLimit", "nothing is limited")), 2, 1, 1,
			cond{"True", "Accepted", "warnings: spec.localRateLimit: nothing is limited"}, cond{"True", "Programmed", ""}},
		{"invalid, the last good version served", update([]model.Object{router(key, 2)},
			problem(key, 3, model.SeverityError, "", "spec.hosts", "exactly one host is required, found 2"),
			problem(key, 2, model.SeverityWarning, "", "", "serving its last good version until its errors are fixed")), 3, 1, 1,
			cond{"False", "Invalid", "spec.hosts: exactly one host is required, found 2"},
			cond{"False", "Invalid", "generation 3 is not served: see Accepted; its last good version, generation 2, is"}},
		{"invalid from the start", update(nil,
			problem(key, 1, model.SeverityError, "", "spec", "at least one of routes")), 1, 1, 1,
			cond{"False", "Invalid", "spec: at least one of routes"}, cond{"False", "Invalid", "generation 1 is not served: see Accepted"}},
		{"part of it not served", update([]model.Object{router(key, 1)},
			problem(key, 1, model.SeverityError, "", "spec.globalRateLimit.rateLimitService", "the global rate limit is not served")), 1, 2, 2,
			cond{"False", "Invalid", "rateLimitService: the global rate limit is not served"}, cond{"True", "Programmed", ""}},
		{"conflicted", update([]model.Object{router(key, 1)},
			problem(key, 1, model.SeverityWarning, model.ReasonConflicted, "spec.hosts[0]", "already routed by MetaRouter shop/first")), 1, 1, 1,
			cond{"False", "Conflicted", "spec.hosts[0]: already routed by MetaRouter shop/first"}, cond{"False", "Conflicted", "without effect"}},
		{"no host", update([]model.Object{router(key, 1)},
			problem(key, 1, model.SeverityWarning, model.ReasonNoHost, "spec.hosts[0]", "no ServiceEntry defines host"),
			problem(key, 1, model.SeverityWarning, "", "spec.routes[0].route[0].destination.host", "no ServiceEntry defines host")), 1, 1, 1,
			cond{"False", "NoHost", "spec.hosts[0]: no ServiceEntry defines host; spec.routes[0]"}, cond{"False", "NoHost", ""}},
		{"problems of another generation do not count", update([]model.Object{router(key, 4)},
			problem(key, 3, model.SeverityError, "", "spec", "old news")), 4, 1, 1,
			cond{"True", "Accepted", "valid"}, cond{"True", "Programmed", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newView(tt.update)
			if !v.knows(key, tt.gen) {
				t.Fatalf("the update does not know generation %d", tt.gen)
			}
			proxies := func(k model.Key, gen int64) (int, int) {
				if k != key || gen != tt.gen {
					t.Errorf("asked about %v generation %d", k, gen)
				}
				return tt.acked, tt.connected
			}
			got := v.conditions(key, tt.gen, proxies, nil, t0)
			for _, want := range []struct {
				typ string
				cond
			}{{v1alpha1.ConditionAccepted, tt.accepted}, {v1alpha1.ConditionProgrammed, tt.programd}} {
				c := meta.FindStatusCondition(got, want.typ)
				if c == nil {
					t.Fatalf("no %s condition in %+v", want.typ, got)
				}
				if string(c.Status) != want.status || c.Reason != want.reason || !strings.Contains(c.Message, want.message) ||
					c.ObservedGeneration != tt.gen {
					t.Errorf("%s: %s %s %q (generation %d), want %s %s containing %q", want.typ, c.Status, c.Reason, c.Message,
						c.ObservedGeneration, want.status, want.reason, want.message)
				}
			}
		})
	}
}

func TestAnUpdateKnowsAGenerationOnceItReadIt(t *testing.T) {
	v := newView(update([]model.Object{router(key, 2)}))
	if v.knows(key, 3) {
		t.Error("generation 3 known from a snapshot of generation 2")
	}
	other := model.Key{Kind: model.KindMetaRouter, Namespace: "shop", Name: "bad"}
	v = newView(update(nil, problem(other, 5, model.SeverityError, "", "spec", "x")))
	if !v.knows(other, 5) || v.knows(other, 6) {
		t.Error("a bad object is known by its problems' generation")
	}
	// Objects of folders, and kinds that are not Meltemi's, are none of the writer's business.
	file := router(key, 0)
	file.Origin = model.Origin{File: "routers.yaml", Document: 1}
	if v := newView(update([]model.Object{file})); v.knows(key, 0) {
		t.Error("a folder's object is known")
	}
}

func TestTransitionTimesStayWhileTheStatusDoes(t *testing.T) {
	v := newView(update([]model.Object{router(key, 1)}))
	none := func(model.Key, int64) (int, int) { return 0, 0 }
	first := v.conditions(key, 1, none, nil, t0)
	later := v.conditions(key, 1, func(model.Key, int64) (int, int) { return 1, 2 }, first, t0.Add(time.Hour))
	acc := meta.FindStatusCondition(later, v1alpha1.ConditionAccepted)
	prog := meta.FindStatusCondition(later, v1alpha1.ConditionProgrammed)
	if !acc.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Accepted moved at %v without changing", acc.LastTransitionTime)
	}
	if prog.Reason != v1alpha1.ReasonPending || !prog.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("Programmed %s at %v: False both times, so the same transition", prog.Reason, prog.LastTransitionTime)
	}
	if sameConditions(first, later) {
		t.Error("a new reason is no change")
	}
	reordered := []metav1.Condition{later[1], later[0]}
	reordered[0].LastTransitionTime = metav1.NewTime(t0.Add(time.Minute))
	if !sameConditions(later, reordered) {
		t.Error("order and transition times are a change")
	}
}

type fakeProxies []xds.ProxyStatus

func (f fakeProxies) Proxies() []xds.ProxyStatus { return f }
func (fakeProxies) Changes() <-chan struct{}     { return nil }

func TestReport(t *testing.T) {
	other := model.Key{Kind: model.KindApplicationProtocol, Namespace: "shop", Name: "rpc"}
	snapshot := func(version uint64, gen int64) *model.Snapshot {
		var objs model.Objects
		objs.Add(router(key, gen))
		ap := &model.ApplicationProtocol{Meta: model.Meta{Kind: other.Kind, Namespace: other.Namespace, Name: other.Name,
			Origin: model.ClusterOrigin("kube", other, t0)}, Spec: &v1alpha1.ApplicationProtocolSpec{}}
		ap.Origin.Generation = 1
		objs.Add(ap)
		return &model.Snapshot{Version: version, Objects: objs}
	}
	proxies := fakeProxies{
		{ID: "on-5", Streams: 1, ModelVersion: 5, Synced: true},
		{ID: "on-6", Streams: 1, ModelVersion: 6, Synced: true},
		{ID: "syncing", Streams: 1, ModelVersion: 6, Synced: false},
		{ID: "failed", Streams: 2, ModelVersion: 6, Synced: true, Error: "translation failed"},
		{ID: "gone", Streams: 0, ModelVersion: 6, Synced: true},
	}
	r := &Reporter{opts: ReporterOptions{Identity: "a"}, proxies: proxies, history: map[uint64]map[string]int64{}, changed: make(chan struct{}, 1)}
	r.Record(snapshot(4, 1))
	r.Record(snapshot(5, 1))
	r.Record(snapshot(6, 2))
	rep := r.report(t0)
	want := map[string]ObjectReport{
		key.String():   {Generation: 2, Acked: 1}, // only on-6 runs generation 2
		other.String(): {Generation: 1, Acked: 2}, // on-5 and on-6
	}
	if rep.Proxies != 4 || len(rep.Objects) != 2 || rep.Objects[key.String()] != want[key.String()] ||
		rep.Objects[other.String()] != want[other.String()] {
		t.Errorf("report %+v, want 4 proxies and %v", rep, want)
	}
	if _, kept := r.history[4]; kept {
		t.Error("version 4, which no proxy runs, is kept")
	}
	if _, kept := r.history[5]; !kept {
		t.Error("version 5, which a proxy runs, is forgotten")
	}

	total := sum([]Report{rep, {Proxies: 2, Objects: map[string]ObjectReport{key.String(): {Generation: 2, Acked: 2}}},
		{Proxies: 1, Objects: map[string]ObjectReport{key.String(): {Generation: 1, Acked: 1}}}})
	if acked, connected := total(key, 2); acked != 3 || connected != 7 {
		t.Errorf("sum: %d of %d, want 3 of 7", acked, connected)
	}
	if !(Report{RenewTime: metav1.NewTime(t0)}).expired(time.Second, t0.Add(4*time.Second)) ||
		(Report{RenewTime: metav1.NewTime(t0)}).expired(time.Second, t0.Add(2*time.Second)) {
		t.Error("a report expires after three intervals")
	}
}

func TestUnrecorded(t *testing.T) {
	seKey := model.Key{Kind: model.KindServiceEntry, Namespace: "shop", Name: "se"}
	entry := &model.ServiceEntry{Meta: model.Meta{Kind: seKey.Kind, Namespace: "shop", Name: "se", Origin: model.ClusterOrigin("kube", seKey, t0)}}
	file := &model.ServiceEntry{Meta: model.Meta{Kind: seKey.Kind, Namespace: "shop", Name: "f", Origin: model.Origin{File: "f.yaml"}}}
	svcKey := model.Key{Kind: "Service", Namespace: "shop", Name: "svc"}
	fromService := &model.ServiceEntry{Meta: model.Meta{Kind: "Service", Namespace: "shop", Name: "svc", Origin: model.ClusterOrigin("kube", svcKey, t0)}}
	a, b := netip.MustParseAddr("127.240.0.1"), netip.MustParseAddr("127.240.0.2")
	snap := &model.Snapshot{Services: []*model.Service{
		{Host: "a", Entry: entry, Addresses: []model.Address{{IP: a, Allocated: true}}},
		{Host: "b", Entry: entry, Addresses: []model.Address{{IP: b, Allocated: true, Recorded: true}}},
		{Host: "given", Entry: entry, Addresses: []model.Address{{IP: netip.MustParseAddr("127.0.0.5")}}},
		{Host: "file", Entry: file, Addresses: []model.Address{{IP: b, Allocated: true}}},
		{Host: "svc", Entry: fromService, Addresses: []model.Address{{IP: b, Allocated: true}}},
	}}
	got := unrecorded(snap)
	if len(got) != 1 || len(got[seKey]) != 1 || got[seKey]["a"] != a {
		t.Errorf("unrecorded %v, want host a of %v only", got, seKey)
	}
}
