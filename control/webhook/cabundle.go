package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/meltemi-mesh/meltemi/api/scheme"
)

// PatchCABundles keeps the caBundle of every webhook that calls this server current, in every
// ValidatingWebhookConfiguration and MutatingWebhookConfiguration of the cluster, until ctx ends: a
// webhook calls this server when its clientConfig names the Service of Options.Service, or has a URL
// whose host is one of Options.Hosts. It is a singleton: the leader runs it. A configuration created
// or edited later is patched when the change is seen; one the API server refuses to patch is logged
// and tried again at its next change.
func (s *Server) PatchCABundles(ctx context.Context) error {
	c, err := cache.New(s.cfg, cache.Options{
		Scheme:                       scheme.New(),
		DefaultTransform:             cache.TransformStripManagedFields(),
		DefaultUnsafeDisableDeepCopy: new(true),
		DefaultWatchErrorHandler: func(_ context.Context, r *toolscache.Reflector, err error) {
			s.opts.Logger.Warn("webhook: cannot watch webhook configurations; retrying", "type", r.TypeDescription(), "error", err)
		},
	})
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	for _, obj := range []client.Object{&admissionregistrationv1.ValidatingWebhookConfiguration{},
		&admissionregistrationv1.MutatingWebhookConfiguration{}} {
		inf, err := c.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { signal() }, UpdateFunc: func(any, any) { signal() },
		}); err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	defer func() { <-cacheDone }()
	if !c.WaitForCacheSync(ctx) {
		return nil
	}
	for {
		caBundle, bundleChanged := s.CABundle()
		if caBundle != nil {
			s.patchAll(ctx, c, caBundle)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-bundleChanged:
		}
	}
}

// patchAll patches the caBundle into every webhook that calls this server and lacks it.
func (s *Server) patchAll(ctx context.Context, c client.Reader, caBundle []byte) {
	var validating admissionregistrationv1.ValidatingWebhookConfigurationList
	var mutating admissionregistrationv1.MutatingWebhookConfigurationList
	if err := c.List(ctx, &validating); err != nil {
		s.opts.Logger.Warn("webhook: listing ValidatingWebhookConfigurations", "error", err)
	}
	if err := c.List(ctx, &mutating); err != nil {
		s.opts.Logger.Warn("webhook: listing MutatingWebhookConfigurations", "error", err)
	}
	for i := range validating.Items {
		cfg := &validating.Items[i]
		hooks := make([]hook, len(cfg.Webhooks))
		for j, w := range cfg.Webhooks {
			hooks[j] = hook{w.Name, w.ClientConfig}
		}
		s.patch(ctx, cfg, "ValidatingWebhookConfiguration", hooks, caBundle)
	}
	for i := range mutating.Items {
		cfg := &mutating.Items[i]
		hooks := make([]hook, len(cfg.Webhooks))
		for j, w := range cfg.Webhooks {
			hooks[j] = hook{w.Name, w.ClientConfig}
		}
		s.patch(ctx, cfg, "MutatingWebhookConfiguration", hooks, caBundle)
	}
}

// hook is what validating and mutating webhooks share that patching needs.
type hook struct {
	name   string
	client admissionregistrationv1.WebhookClientConfig
}

// patch sets the caBundle of the webhooks of one configuration that call this server. Each change is
// guarded by a test of the webhook's name, so that a configuration edited meanwhile is not patched
// at the wrong index.
func (s *Server) patch(ctx context.Context, cfg client.Object, kind string, hooks []hook, caBundle []byte) {
	var ops []map[string]any
	var names []string
	for i, h := range hooks {
		if !s.calls(h.client) || bytes.Equal(h.client.CABundle, caBundle) {
			continue
		}
		path := "/webhooks/" + strconv.Itoa(i)
		ops = append(ops,
			map[string]any{"op": "test", "path": path + "/name", "value": h.name},
			map[string]any{"op": "add", "path": path + "/clientConfig/caBundle", "value": base64.StdEncoding.EncodeToString(caBundle)})
		names = append(names, h.name)
	}
	if len(ops) == 0 {
		return
	}
	data, err := json.Marshal(ops)
	if err != nil {
		s.opts.Logger.Error("webhook: encoding a patch", "error", err)
		return
	}
	// The patch goes to a copy: objects of the cache are shared.
	target := cfg.DeepCopyObject().(client.Object)
	if err := s.client.Patch(ctx, target, client.RawPatch("application/json-patch+json", data)); err != nil {
		s.opts.Logger.Warn("webhook: cannot patch the caBundle; retrying at its next change", "kind", kind,
			"name", cfg.GetName(), "webhooks", names, "error", err)
		return
	}
	s.opts.Logger.Info("webhook: patched the caBundle", "kind", kind, "name", cfg.GetName(), "webhooks", names)
}

// calls reports whether a webhook's client config reaches this server.
func (s *Server) calls(cc admissionregistrationv1.WebhookClientConfig) bool {
	if svc := cc.Service; svc != nil {
		return s.svcName != "" && svc.Name == s.svcName && svc.Namespace == s.svcNamespace
	}
	if cc.URL == nil {
		return false
	}
	u, err := url.Parse(*cc.URL)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); ip != nil {
		return slices.ContainsFunc(s.names.ips, ip.Equal)
	}
	return slices.Contains(s.opts.Hosts, host)
}
