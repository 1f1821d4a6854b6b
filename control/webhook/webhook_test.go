package webhook

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/meltemi-mesh/meltemi/api/scheme"
)

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testServer(t *testing.T, opts Options, objs ...client.Object) (*Server, client.Client) {
	t.Helper()
	opts.Namespace = "meltemi-system"
	s, err := New(&rest.Config{Host: "https://127.0.0.1:1"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	s.client = c
	s.opts.Logger = slog.New(slog.DiscardHandler)
	return s, c
}

func secretOf(t *testing.T, c client.Client) *corev1.Secret {
	t.Helper()
	var sec corev1.Secret
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "meltemi-system", Name: DefaultSecretName}, &sec); err != nil {
		t.Fatal(err)
	}
	return &sec
}

func TestNewNamesWhatTheCertificateIsFor(t *testing.T) {
	s, _ := testServer(t, Options{Service: "meltemi.meltemi-system", Hosts: []string{"127.0.3.4", "dev.example"}, ClusterDomain: "corp.local."})
	want := []string{"meltemi.meltemi-system.svc", "meltemi.meltemi-system.svc.corp.local", "meltemi.meltemi-system", "dev.example", "127.0.3.4"}
	if got := s.nameList(); !equal(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
	if svc, _ := testServer(t, Options{Service: "meltemi.meltemi-system.svc"}); svc.svcName != "meltemi" || svc.svcNamespace != "meltemi-system" {
		t.Errorf("NAME.NAMESPACE.svc read as %s in %s", svc.svcName, svc.svcNamespace)
	}
	for _, bad := range []Options{{}, {Service: "nonamespace"}, {Service: "Bad_Name.ns"}, {Hosts: []string{"not a host"}}} {
		bad.Namespace = "x"
		if _, err := New(&rest.Config{}, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestTheSecretIsCreatedThenReused(t *testing.T) {
	s, c := testServer(t, Options{Service: "meltemi.meltemi-system"})
	ctx := context.Background()
	next := s.syncSecret(ctx, c, t0)
	sec := secretOf(t, c)
	if sec.Type != corev1.SecretTypeTLS {
		t.Errorf("type %s", sec.Type)
	}
	b, err := parseSecret(sec.Data)
	if err != nil {
		t.Fatal(err)
	}
	// The API server dials NAME.NAMESPACE.svc and checks the chain against the caBundle.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(sec.Data[keyCABundle])
	if _, err := b.serving.cert.Verify(x509.VerifyOptions{DNSName: "meltemi.meltemi-system.svc", Roots: roots, CurrentTime: t0}); err != nil {
		t.Errorf("serving certificate does not verify: %v", err)
	}
	bundle, _ := s.CABundle()
	if !bytes.Equal(bundle, sec.Data[keyCABundle]) {
		t.Error("the server does not serve what the Secret holds")
	}
	// Renewal comes at two thirds of the serving certificate's life (the sooner of the two).
	if want := renewAt(b.serving.cert).Sub(time.Now()); next < want-time.Minute || next > want+time.Minute {
		t.Errorf("next look in %v, want about %v", next, want)
	}

	// Another replica, or a restart, serves what is there.
	other, _ := testServer(t, Options{Service: "meltemi.meltemi-system"})
	other.client = c
	other.syncSecret(ctx, c, t0.Add(time.Hour))
	if again := secretOf(t, c); again.ResourceVersion != sec.ResourceVersion {
		t.Error("a good Secret was rewritten")
	}
	if got, _ := other.CABundle(); !bytes.Equal(got, sec.Data[keyCABundle]) {
		t.Error("a second replica serves another CA")
	}
}

func TestTheSecretIsRenewed(t *testing.T) {
	tests := []struct {
		name   string
		opts   Options // of the replica that finds the Secret
		at     time.Time
		sameCA bool
	}{
		{"serving certificate due", Options{Service: "meltemi.meltemi-system"}, t0.Add(250 * 24 * time.Hour), true},
		{"new names", Options{Service: "meltemi.meltemi-system", Hosts: []string{"127.0.9.9"}}, t0.Add(time.Hour), true},
		{"CA due", Options{Service: "meltemi.meltemi-system"}, t0.Add(7 * 365 * 24 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c := testServer(t, Options{Service: "meltemi.meltemi-system"})
			ctx := context.Background()
			s.syncSecret(ctx, c, t0)
			before, _ := parseSecret(secretOf(t, c).Data)

			r, _ := testServer(t, tt.opts)
			r.client = c
			r.syncSecret(ctx, c, tt.at)
			after, err := parseSecret(secretOf(t, c).Data)
			if err != nil {
				t.Fatal(err)
			}
			if after.serving.cert.SerialNumber.Cmp(before.serving.cert.SerialNumber) == 0 {
				t.Fatal("not renewed")
			}
			if !r.names.covers(after.serving.cert) {
				t.Errorf("renewed for %v %v", after.serving.cert.DNSNames, after.serving.cert.IPAddresses)
			}
			if same := after.ca.cert.Equal(before.ca.cert); same != tt.sameCA {
				t.Errorf("same CA %v, want %v", same, tt.sameCA)
			}
			// A new CA keeps the old one trusted while it is valid, for API servers not patched yet.
			if !tt.sameCA && !bytes.Contains(after.caBundle, before.ca.pem) {
				t.Error("the old CA left the caBundle at once")
			}
		})
	}
}

func TestAnUnusableSecretIsReplaced(t *testing.T) {
	bad := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "meltemi-system", Name: DefaultSecretName},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{keyCert: []byte("junk")}}
	s, c := testServer(t, Options{Service: "meltemi.meltemi-system"}, bad)
	s.syncSecret(context.Background(), c, t0)
	if _, err := parseSecret(secretOf(t, c).Data); err != nil {
		t.Errorf("still unusable: %v", err)
	}
	if !s.Ready() {
		t.Error("no certificate loaded")
	}
}

func TestParseSecretChecksTheChain(t *testing.T) {
	one, err := issue(nil, names{dns: []string{"a.example"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := issue(nil, names{dns: []string{"a.example"}}, t0)
	if err != nil {
		t.Fatal(err)
	}
	mixed := map[string][]byte{keyCert: one[keyCert], keyKey: one[keyKey], keyCABundle: other[keyCABundle], keyCAKey: other[keyCAKey]}
	if _, err := parseSecret(mixed); err == nil {
		t.Error("a serving certificate of another CA was accepted")
	}
	swapped := map[string][]byte{keyCert: one[keyCert], keyKey: other[keyKey], keyCABundle: one[keyCABundle], keyCAKey: one[keyCAKey]}
	if _, err := parseSecret(swapped); err == nil {
		t.Error("a key of another certificate was accepted")
	}
	if _, err := parseSecret(one); err != nil {
		t.Error(err)
	}
}

func TestValidCertsDropsExpiredOnes(t *testing.T) {
	old, _ := newCA(t0)
	young, _ := newCA(t0.Add(5 * 365 * 24 * time.Hour))
	data := append(append([]byte{}, old.pem...), young.pem...)
	got := validCerts(data, t0.Add(11*365*24*time.Hour))
	block, rest := pem.Decode(got)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("kept %q", got)
	}
	if c, _ := x509.ParseCertificate(block.Bytes); !c.Equal(young.cert) {
		t.Error("kept the expired CA")
	}
}

func TestCABundleIsPatchedIntoTheWebhooksThatCallTheServer(t *testing.T) {
	url := func(u string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{URL: &u}
	}
	svc := func(name, ns string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Name: name, Namespace: ns}}
	}
	none := admissionregistrationv1.SideEffectClassNone
	vwh := func(name string, cc admissionregistrationv1.WebhookClientConfig) admissionregistrationv1.ValidatingWebhook {
		return admissionregistrationv1.ValidatingWebhook{Name: name, ClientConfig: cc, SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}
	}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meltemi-validation"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{
			vwh("by-service.meltemi.io", svc("meltemi", "meltemi-system")),
			vwh("other-namespace.example.com", svc("meltemi", "elsewhere")),
			vwh("by-ip.meltemi.io", url("https://127.0.3.4:15017/validate")),
			vwh("by-name.meltemi.io", url("https://dev.example:8443/validate")),
			vwh("someone-else.example.com", url("https://10.1.1.1/validate")),
		},
	}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "meltemi-injection"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "inject.meltemi.io", ClientConfig: svc("meltemi", "meltemi-system"),
			SideEffects: &none, AdmissionReviewVersions: []string{"v1"}}},
	}
	s, c := testServer(t, Options{Service: "meltemi.meltemi-system", Hosts: []string{"127.0.3.4", "dev.example"}}, validating, mutating)
	ctx := context.Background()
	s.syncSecret(ctx, c, t0)
	caBundle, _ := s.CABundle()
	s.patchAll(ctx, c, caBundle)

	var gotV admissionregistrationv1.ValidatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKeyFromObject(validating), &gotV); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"by-service.meltemi.io": true, "by-ip.meltemi.io": true, "by-name.meltemi.io": true}
	for _, w := range gotV.Webhooks {
		if patched := bytes.Equal(w.ClientConfig.CABundle, caBundle); patched != want[w.Name] {
			t.Errorf("%s: patched %v, want %v", w.Name, patched, want[w.Name])
		}
	}
	var gotM admissionregistrationv1.MutatingWebhookConfiguration
	if err := c.Get(ctx, client.ObjectKeyFromObject(mutating), &gotM); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(gotM.Webhooks[0].ClientConfig.CABundle, caBundle) {
		t.Error("the mutating webhook was not patched")
	}
	// Nothing to do the second time round.
	rv := gotV.ResourceVersion
	s.patchAll(ctx, c, caBundle)
	if err := c.Get(ctx, client.ObjectKeyFromObject(validating), &gotV); err != nil || gotV.ResourceVersion != rv {
		t.Errorf("patched again (%v)", err)
	}
}

func TestCallsComparesIPAddresses(t *testing.T) {
	s, _ := testServer(t, Options{Hosts: []string{"::1"}})
	u := "https://[0:0::1]:9443/validate"
	if !s.calls(admissionregistrationv1.WebhookClientConfig{URL: &u}) {
		t.Error("an IPv6 address written otherwise is not recognised")
	}
}
