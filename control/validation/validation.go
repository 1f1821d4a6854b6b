// Package validation is the validating admission webhook of Meltemi's CRDs (MetaRouter,
// ApplicationProtocol, RedisService, RedisDestination, DubboAuthorizationPolicy): an object the
// controller would refuse to serve is refused by the API server instead, with every error naming its
// field, in the words `meltemi validate` uses. It checks what Aeraki's webhook checks (one host, a
// route or a rate limit, Istio's exportTo rules, percentages) and everything else control/model's
// Validate finds.
//
// What depends on other objects (a host no ServiceEntry defines, a second MetaRouter for a host) never
// refuses an object, since objects arrive in any order; it comes back as admission warnings, which
// kubectl prints, found by building the controller's current snapshot with the object in it. Istio's
// ServiceEntry and DestinationRule are never refused either (Istio validates them): problems that
// concern their meta-protocol ports come back as warnings.
package validation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
)

// Path is where the controller's webhook server serves the handler.
const Path = "/validate"

// maxWarnings bounds the warnings of one answer: the API server keeps a few kilobytes of them.
const maxWarnings = 20

// Handler validates admission requests. It is safe for concurrent use.
type Handler struct {
	// Snapshot returns the snapshot the controller serves, that a new version of an object is tried
	// in; nil (or a func returning nil) before there is one, and then only the object itself is checked.
	Snapshot func() *model.Snapshot
	// Model is what the controller builds its snapshots with.
	Model model.Options
	// Now is the clock that dates an object being created; time.Now when nil.
	Now func() time.Time
}

var _ admission.Handler = (*Handler)(nil)

// kinds are the kinds handled, by group: whether a problem refuses the object.
var kinds = map[string]map[string]bool{
	"metaprotocol.aeraki.io": {string(model.KindMetaRouter): true, string(model.KindApplicationProtocol): true},
	"redis.aeraki.io":        {string(model.KindRedisService): true, string(model.KindRedisDestination): true},
	"dubbo.aeraki.io":        {string(model.KindDubboAuthorizationPolicy): true},
	"networking.istio.io":    {string(model.KindServiceEntry): false, string(model.KindDestinationRule): false},
}

// Handle checks a created or updated object; anything else is allowed.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	refuses, handled := kinds[req.Kind.Group][req.Kind.Kind]
	if !handled {
		return admission.Allowed("")
	}
	doc, created, err := h.complete(req)
	if err != nil {
		return admission.Errored(http.StatusBadRequest, err)
	}
	key := model.Key{Kind: model.Kind(req.Kind.Kind), Namespace: req.Namespace, Name: req.Name}
	origin := model.ClusterOrigin("kube", key, created)
	obj, key, problems := model.Decode(origin, doc)
	if obj != nil {
		problems = append(problems, h.inContext(obj, origin)...)
	}
	if !refuses {
		if !h.concerned(obj) {
			return admission.Allowed("")
		}
		resp := admission.Allowed("")
		resp.Warnings = warnings(problems, "meltemi: ")
		return resp
	}
	if obj != nil {
		// Decoded, so the object is fine on its own: what Build found relates it to others.
		resp := admission.Allowed("")
		resp.Warnings = warnings(problems, "")
		return resp
	}
	var errs, warns []model.Problem
	for _, p := range problems {
		if p.Severity == model.SeverityError {
			errs = append(errs, p)
		} else {
			warns = append(warns, p)
		}
	}
	if len(errs) == 0 {
		// Not an object of the model, whatever the request said; nothing to refuse it for.
		resp := admission.Allowed("")
		resp.Warnings = warnings(warns, "")
		return resp
	}
	return denied(req, key, errs, warns)
}

// complete returns the object of a request as model.Decode reads it: of the request's kind, with the
// namespace and name of the request when the object lacks them (the API server fills them in later),
// and when it was created (now, for an object being created).
func (h *Handler) complete(req admission.Request) ([]byte, time.Time, error) {
	var obj map[string]any
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil || obj == nil {
		return nil, time.Time{}, fmt.Errorf("the object is not a JSON object: %v", err)
	}
	md, _ := obj["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		obj["metadata"] = md
	}
	// The request says what the object is; the API server has made the object say so too.
	obj["apiVersion"] = req.Kind.Group + "/" + req.Kind.Version
	obj["kind"] = req.Kind.Kind
	if name, _ := md["name"].(string); name == "" && req.Name != "" {
		md["name"] = req.Name
	}
	if ns, _ := md["namespace"].(string); ns == "" && req.Namespace != "" {
		md["namespace"] = req.Namespace
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	created := now()
	if s, _ := md["creationTimestamp"].(string); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			created = t
		}
	}
	doc, err := json.Marshal(obj)
	return doc, created, err
}

// inContext builds the current snapshot with obj in place of its current version and returns the
// problems found about obj: those a good object has with the objects around it.
func (h *Handler) inContext(obj model.Object, origin model.Origin) []model.Problem {
	if h.Snapshot == nil {
		return nil
	}
	snap := h.Snapshot()
	if snap == nil {
		return nil
	}
	key := obj.Metadata().Key()
	var objs model.Objects
	for _, o := range snap.Objects.All() {
		if m := o.Metadata(); m.Key() == key && kube.FromCluster(m.Origin, key) {
			continue
		}
		objs.Add(o)
	}
	objs.Add(obj)
	var out []model.Problem
	for _, p := range model.Build(snap.Version+1, objs, h.Model).Problems {
		if p.Key == key && p.Origin.File == origin.File {
			out = append(out, p)
		}
	}
	return out
}

// concerned reports whether an Istio object is about a meta-protocol service, which Meltemi has
// something to say about: a ServiceEntry with a meta-protocol port (or one that asks for a protocol
// no codec speaks), a DestinationRule for the host of such a service.
func (h *Handler) concerned(obj model.Object) bool {
	codecs := h.Model.Codecs
	var snap *model.Snapshot
	if h.Snapshot != nil {
		snap = h.Snapshot()
	}
	if snap != nil {
		codecs = snap.Codecs
	}
	switch o := obj.(type) {
	case *model.ServiceEntry:
		for _, p := range o.Spec.GetPorts() {
			if pp, err := model.ClassifyPort(p.GetName(), p.GetProtocol(), codecs); err != nil || pp.MetaProtocol() {
				return true
			}
		}
	case *model.DestinationRule:
		if snap != nil {
			svc := snap.Service(o.Spec.GetHost())
			return svc != nil && svc.HasMetaProtocol()
		}
	}
	return false
}

// text formats a problem as `meltemi validate` prints it, without the origin, which here is the
// object itself, and without "warning: ", which admission warnings are already.
func text(p model.Problem) string {
	p.Origin = model.Origin{}
	p.Severity = model.SeverityError
	return p.String()
}

func warnings(problems []model.Problem, prefix string) []string {
	var out []string
	for _, p := range problems {
		if len(out) == maxWarnings {
			out = append(out, fmt.Sprintf("%s%d more problems; `meltemi validate` lists them all", prefix, len(problems)-maxWarnings))
			break
		}
		out = append(out, prefix+text(p))
	}
	return out
}

// denied refuses an object as the API server refuses an invalid one: 422 Invalid, with a cause per
// field, and a message listing every error.
func denied(req admission.Request, key model.Key, errs, warns []model.Problem) admission.Response {
	lines := make([]string, len(errs))
	causes := make([]metav1.StatusCause, len(errs))
	for i, p := range errs {
		lines[i] = text(p)
		causes[i] = metav1.StatusCause{Type: metav1.CauseTypeFieldValueInvalid, Field: p.Field, Message: p.Message}
	}
	resp := admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed: false,
		Result: &metav1.Status{
			Status:  metav1.StatusFailure,
			Code:    http.StatusUnprocessableEntity,
			Reason:  metav1.StatusReasonInvalid,
			Message: strings.Join(lines, "\n"),
			Details: &metav1.StatusDetails{Group: req.Kind.Group, Kind: req.Kind.Kind, Name: key.Name, Causes: causes},
		},
		Warnings: warnings(warns, ""),
	}}
	return resp
}
