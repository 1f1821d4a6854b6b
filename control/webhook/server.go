// Package webhook is the controller's one HTTPS server for Kubernetes admission webhooks: it serves
// admission handlers (controller-runtime's admission.Handler) by path, keeps its serving certificate,
// and keeps the caBundle of the webhook configurations that call it current. Handlers live in packages
// of their own (control/validation, and the sidecar injector) and are registered with Handle.
//
// The certificate is issued by a CA the controller makes itself and is kept in one Secret, so every
// replica serves the same certificate and the caBundle is one value whichever replica answers. Any
// replica creates the Secret when it is missing and renews what is due (the API server's optimistic
// concurrency lets one of them win); every replica watches it and serves what it holds. Patching the
// caBundle into the webhook configurations is a singleton, run by the leader (PatchCABundles).
package webhook

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meltemi-mesh/meltemi/api/scheme"
)

// DefaultSecretName is the name of the Secret holding the certificates unless told otherwise.
const DefaultSecretName = "meltemi-webhook-tls"

// Options configure a Server.
type Options struct {
	// Service is the Service the API server calls the webhooks through, as NAME.NAMESPACE (or
	// NAME.NAMESPACE.svc): the
	// certificate is for its DNS names, and the caBundle goes to every webhook calling it.
	Service string
	// Hosts are further DNS names and IP addresses the certificate is for, for an API server that
	// calls the webhooks by URL (a controller running outside the cluster); the caBundle goes to every
	// webhook whose URL has one of them as its host. Service, Hosts or both must be given.
	Hosts []string
	// ClusterDomain is the DNS domain of the cluster's Services; "cluster.local" when empty.
	ClusterDomain string
	// Namespace and SecretName are those of the Secret the certificates are kept in; SecretName is
	// DefaultSecretName when empty.
	Namespace, SecretName string
	// Logger receives what goes wrong with the Secret or the webhook configurations (Warn) and
	// certificates issued and caBundles patched (Info).
	Logger *slog.Logger
}

// Server serves admission webhooks over HTTPS.
type Server struct {
	opts         Options
	cfg          *rest.Config
	client       client.Client
	names        names
	svcName      string
	svcNamespace string
	mux          *http.ServeMux

	mu      sync.Mutex
	paths   []string
	current *bundle
	changed chan struct{} // closed and replaced when current changes
}

// New returns a server for the cluster cfg talks to. It contacts nothing until Run.
func New(cfg *rest.Config, opts Options) (*Server, error) {
	if opts.Namespace == "" {
		return nil, errors.New("webhook: the namespace of its Secret is required")
	}
	opts.SecretName = cmp.Or(opts.SecretName, DefaultSecretName)
	opts.ClusterDomain = strings.TrimSuffix(cmp.Or(opts.ClusterDomain, "cluster.local"), ".")
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{opts: opts, cfg: cfg, mux: http.NewServeMux(), changed: make(chan struct{})}
	if opts.Service == "" && len(opts.Hosts) == 0 {
		return nil, errors.New("webhook: a Service (NAME.NAMESPACE) or hosts the API server calls it by are required")
	}
	if opts.Service != "" {
		// NAME.NAMESPACE.svc is the same Service, as the API server names it.
		name, ns, ok := strings.Cut(strings.TrimSuffix(opts.Service, ".svc"), ".")
		if !ok || len(validation.IsDNS1123Label(name)) > 0 || len(validation.IsDNS1123Label(ns)) > 0 {
			return nil, fmt.Errorf("webhook: service %q is not NAME.NAMESPACE", opts.Service)
		}
		s.svcName, s.svcNamespace = name, ns
		// What the API server dials (NAME.NAMESPACE.svc) and what clients in the cluster may use.
		s.names.dns = []string{name + "." + ns + ".svc", name + "." + ns + ".svc." + opts.ClusterDomain, name + "." + ns}
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			s.names.ips = append(s.names.ips, ip)
		} else if errs := validation.IsDNS1123Subdomain(h); len(errs) == 0 {
			s.names.dns = append(s.names.dns, h)
		} else {
			return nil, fmt.Errorf("webhook: host %q is neither an IP address nor a DNS name: %s", h, strings.Join(errs, "; "))
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	s.client = c
	return s, nil
}

// Handle serves h at path. It must be called before Run; a path can be handled once.
func (s *Server) Handle(path string, h admission.Handler) {
	s.mu.Lock()
	s.paths = append(s.paths, path)
	s.mu.Unlock()
	s.mux.Handle(path, &admission.Webhook{Handler: h})
}

// Paths are the paths handled, in the order registered.
func (s *Server) Paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.paths)
}

// Ready reports whether the server has a certificate to serve.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current != nil
}

// CABundle returns the PEM of the CAs the API server must trust, and a channel closed when it or the
// serving certificate changes; the bundle is nil until the Secret has been read.
func (s *Server) CABundle() ([]byte, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return nil, s.changed
	}
	return s.current.caBundle, s.changed
}

func (s *Server) load(b *bundle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && string(s.current.serving.pem) == string(b.serving.pem) &&
		string(s.current.caBundle) == string(b.caBundle) {
		return
	}
	s.current = b
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil {
		return nil, errors.New("webhook: no certificate yet")
	}
	return s.current.tls, nil
}

// Run keeps the certificate and serves the handlers over TLS on lis until ctx ends. It fails only if
// the server cannot serve; trouble with the Secret is logged and retried, and until a certificate is
// loaded, TLS handshakes fail.
func (s *Server) Run(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: s.certificate, MinVersion: tls.VersionTLS12},
		ErrorLog:          slog.NewLogLogger(s.opts.Logger.Handler(), slog.LevelDebug),
	}
	keeper := make(chan error, 1)
	go func() { keeper <- s.keepCertificate(ctx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tls.NewListener(lis, srv.TLSConfig)) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-served:
		err = fmt.Errorf("webhook: serve %s: %w", lis.Addr(), err)
	case err = <-keeper:
	}
	shutdown, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	_ = srv.Shutdown(shutdown)
	cancel()
	if kerr := <-keeper; err == nil {
		err = kerr
	}
	return err
}

// keepCertificate watches the Secret and makes sure it holds a valid certificate for the server's
// names, creating or renewing it when needed, and loads what it holds.
func (s *Server) keepCertificate(ctx context.Context) error {
	c, err := cache.New(s.cfg, cache.Options{
		Scheme:            scheme.New(),
		DefaultNamespaces: map[string]cache.Config{s.opts.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			// Only the one Secret, which a Role can grant by name.
			&corev1.Secret{}: {Field: fields.OneTermEqualSelector("metadata.name", s.opts.SecretName)},
		},
		DefaultWatchErrorHandler: func(_ context.Context, _ *toolscache.Reflector, err error) {
			s.opts.Logger.Warn("webhook: cannot watch the Secret of its certificate; retrying", "secret", s.secretName(), "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	changed := make(chan struct{}, 1)
	inf, err := c.GetInformer(ctx, &corev1.Secret{}, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { signal() }, UpdateFunc: func(any, any) { signal() }, DeleteFunc: func(any) { signal() },
	}); err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	defer func() { <-cacheDone }()
	if !c.WaitForCacheSync(ctx) {
		return nil
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-timer.C:
		}
		next := s.syncSecret(ctx, c, time.Now())
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		timer.Reset(next)
	}
}

func (s *Server) secretName() string { return s.opts.Namespace + "/" + s.opts.SecretName }

// retryAfter is how soon to look again after the API server refused a read or a write.
const retryAfter = 5 * time.Second

// syncSecret loads the certificate of the Secret, issuing one first if it is missing, unusable, not
// for the server's names or due. It returns when to look again.
func (s *Server) syncSecret(ctx context.Context, c client.Reader, now time.Time) time.Duration {
	key := types.NamespacedName{Namespace: s.opts.Namespace, Name: s.opts.SecretName}
	var sec corev1.Secret
	err := c.Get(ctx, key, &sec)
	if apierrors.IsNotFound(err) {
		data, err := issue(nil, s.names, now)
		if err != nil {
			s.opts.Logger.Error("webhook: issuing a certificate", "error", err)
			return retryAfter
		}
		sec = corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
				Labels: map[string]string{"app.kubernetes.io/name": "meltemi", "app.kubernetes.io/component": "webhook"}},
			Type: corev1.SecretTypeTLS,
			Data: data,
		}
		switch err := s.client.Create(ctx, &sec); {
		case apierrors.IsAlreadyExists(err):
			return retryAfter // another replica made it: its event brings it
		case err != nil:
			s.opts.Logger.Warn("webhook: cannot create the Secret of its certificate; retrying", "secret", s.secretName(), "error", err)
			return retryAfter
		}
		s.opts.Logger.Info("webhook: created a CA and a serving certificate", "secret", s.secretName())
		return s.loadData(data)
	}
	if err != nil {
		s.opts.Logger.Warn("webhook: cannot read the Secret of its certificate; retrying", "secret", s.secretName(), "error", err)
		return retryAfter
	}
	b, err := parseSecret(sec.Data)
	if err == nil && s.names.covers(b.serving.cert) && !due(b.serving.cert, now) && !due(b.ca.cert, now) {
		s.load(b)
		return time.Until(minTime(renewAt(b.serving.cert), renewAt(b.ca.cert)))
	}
	why := "due for renewal"
	switch {
	case err != nil:
		why = "unusable: " + err.Error()
		b = nil
	case !s.names.covers(b.serving.cert):
		why = "not for " + strings.Join(s.nameList(), ", ")
	}
	data, err := issue(b, s.names, now)
	if err != nil {
		s.opts.Logger.Error("webhook: issuing a certificate", "error", err)
		return retryAfter
	}
	sec.Data = data
	switch err := s.client.Update(ctx, &sec); {
	case apierrors.IsConflict(err):
		return retryAfter // another replica renewed it: its event brings it
	case err != nil:
		s.opts.Logger.Warn("webhook: cannot update the Secret of its certificate; retrying", "secret", s.secretName(), "error", err)
		return retryAfter
	}
	s.opts.Logger.Info("webhook: issued a serving certificate", "secret", s.secretName(), "because", why)
	return s.loadData(data)
}

func (s *Server) loadData(data map[string][]byte) time.Duration {
	b, err := parseSecret(data)
	if err != nil {
		// What was just issued always parses; this is a bug.
		s.opts.Logger.Error("webhook: the certificate just issued does not load", "error", err)
		return retryAfter
	}
	s.load(b)
	return time.Until(minTime(renewAt(b.serving.cert), renewAt(b.ca.cert)))
}

func (s *Server) nameList() []string {
	out := slices.Clone(s.names.dns)
	for _, ip := range s.names.ips {
		out = append(out, ip.String())
	}
	return out
}
