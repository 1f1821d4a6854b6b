package model_test

import (
	"maps"
	"net/netip"
	"testing"

	"github.com/meltemi-mesh/meltemi/control/model"
)

// What a cluster adds to objects: addresses recorded in a ServiceEntry's status, generations, and the
// reasons of problems that status conditions report.

func TestRecordedAddresses(t *testing.T) {
	const host = "recorded.example"
	recorded := netip.MustParseAddr("127.240.7.7")
	status := func(lines string) string { return "status:\n  addresses:\n" + lines }
	tests := []struct {
		name     string
		files    []string
		want     netip.Addr // zero: the address the host's name hashes to
		recorded bool
		warnings []string // fields warned about
	}{
		{"recorded address is served", []string{serviceEntry("se", host, status("  - {value: 127.240.7.7, host: "+host+"}\n"))},
			recorded, true, nil},
		{"another host's record is not used", []string{serviceEntry("se", host, status("  - {value: 127.240.7.7, host: other.example}\n"))},
			netip.Addr{}, false, nil},
		{"Istio's allocation outside the range is not used", []string{serviceEntry("se", host, status("  - {value: 240.240.0.9, host: "+host+"}\n"))},
			netip.Addr{}, false, nil},
		{"an address recorded for two hosts goes to the first entry",
			[]string{
				serviceEntry("first", "first.example", status("  - {value: 127.240.7.7, host: first.example}\n")),
				serviceEntry("se", host, status("  - {value: 127.240.7.7, host: "+host+"}\n")),
			}, netip.Addr{}, false, nil},
		{"an address another entry writes is not used",
			[]string{
				serviceEntry("first", "first.example", "  addresses: [127.240.7.7]\n"),
				serviceEntry("se", host, status("  - {value: 127.240.7.7, host: "+host+"}\n")),
			}, netip.Addr{}, false, nil},
		{"unreadable entries are warned about and skipped",
			[]string{serviceEntry("se", host, status("  - {value: nonsense, host: "+host+"}\n  - {value: 127.240.7.7, host: "+host+"}\n"))},
			recorded, true, []string{"status.addresses[0]"}},
		{"unreadable status is warned about", []string{serviceEntry("se", host, "status: {addresses: 7}\n")},
			netip.Addr{}, false, []string{"status.addresses"}},
	}
	hashed := mustBuild(t, localOpts, serviceEntry("se", host, "")).Service(host).Addresses[0].IP
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap, problems := build(t, localOpts, tt.files...)
			wantCount(t, problems, 0, len(tt.warnings))
			for _, f := range tt.warnings {
				wantProblem(t, problems, model.SeverityWarning, f, "ignored")
			}
			svc := snap.Service(host)
			if svc == nil || len(svc.Addresses) != 1 {
				t.Fatalf("service %+v: want one address", svc)
			}
			want := tt.want
			if !want.IsValid() {
				want = hashed
			}
			if a := svc.Addresses[0]; a.IP != want || !a.Allocated || a.Recorded != tt.recorded {
				t.Errorf("address %+v, want %s allocated, recorded %v", a, want, tt.recorded)
			}
		})
	}

	t.Run("the record is part of the content", func(t *testing.T) {
		plain, _ := load(t, serviceEntry("se", host, ""))
		with, _ := load(t, serviceEntry("se", host, status("  - {value: 127.240.7.7, host: "+host+"}\n")))
		if plain.Hash() == with.Hash() {
			t.Error("recording an address does not change the hash")
		}
	})
}

func TestGenerationIsPartOfTheContent(t *testing.T) {
	objs, _ := load(t, metaRouter("r", "a.example"))
	before := objs.Hash()
	objs.MetaRouters[0].Origin.Generation = 2
	if objs.Hash() == before {
		t.Error("a new generation with the same spec does not change the hash")
	}
}

func TestProblemReasons(t *testing.T) {
	const host = "svc.example"
	snap, problems := build(t, localOpts,
		serviceEntry("svc", host, "  addresses: [127.0.0.9]\n"),
		metaRouter("first", host),
		metaRouter("second", host),
		metaRouter("nowhere", "nowhere.example"),
		`apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: a, namespace: demo}
spec: {protocol: video, codec: aeraki.meta_protocol.codec.dubbo}
---
apiVersion: metaprotocol.aeraki.io/v1alpha1
kind: ApplicationProtocol
metadata: {name: b, namespace: demo}
spec: {protocol: video, codec: aeraki.meta_protocol.codec.other}`)
	if snap.Service(host).Router.Name != "first" {
		t.Fatalf("router %s, want first", snap.Service(host).Router.Name)
	}
	// Only the objects that others leave without effect have a reason.
	want := map[string]model.Reason{
		"MetaRouter demo/second":     model.ReasonConflicted,
		"MetaRouter demo/nowhere":    model.ReasonNoHost,
		"ApplicationProtocol demo/b": model.ReasonConflicted,
	}
	got := map[string]model.Reason{}
	for _, p := range problems {
		if p.Reason != "" {
			got[p.Key.String()] = p.Reason
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("reasons %v, want %v\n%s", got, want, listProblems(problems))
	}
}

func TestExportTo(t *testing.T) {
	tests := []struct {
		name     string
		kind     string // MetaRouter, ServiceEntry or DestinationRule
		exportTo string
		errors   []string // fields in error
	}{
		{"empty", "MetaRouter", "[]", nil},
		{"own namespace", "MetaRouter", `["."]`, nil},
		{"everybody", "MetaRouter", `["*"]`, nil},
		{"namespaces", "MetaRouter", `[".", other, third]`, nil},
		{"everybody and more", "MetaRouter", `["*", other]`, []string{"spec.exportTo"}},
		{"twice", "MetaRouter", `[other, other]`, []string{"spec.exportTo[1]"}},
		{"dot and own namespace", "DestinationRule", `[".", demo]`, []string{"spec.exportTo[1]"}},
		{"not a namespace name", "DestinationRule", `[Bad_Name]`, []string{"spec.exportTo[0]"}},
		{"nobody is for service entries", "MetaRouter", `["~"]`, []string{"spec.exportTo[0]"}},
		{"nobody", "ServiceEntry", `["~"]`, nil},
		{"nobody and somebody", "ServiceEntry", `["~", "."]`, []string{"spec.exportTo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var doc string
			switch tt.kind {
			case "MetaRouter":
				doc = metaRouter("r", "a.example") + "  exportTo: " + tt.exportTo + "\n"
			case "ServiceEntry":
				doc = serviceEntry("se", "a.example", "  exportTo: "+tt.exportTo+"\n")
			case "DestinationRule":
				doc = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: dr, namespace: demo}\n" +
					"spec: {host: a.example, exportTo: " + tt.exportTo + "}\n"
			}
			_, problems := load(t, doc)
			wantCount(t, problems, len(tt.errors), 0)
			for _, f := range tt.errors {
				wantProblem(t, problems, model.SeverityError, f, "")
			}
		})
	}
}
