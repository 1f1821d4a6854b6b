// Package status writes what the controller knows about cluster objects into their status, from the
// replica that leads (control/election): the Accepted and Programmed conditions of Meltemi's CRDs
// (Writer), and the addresses local mode allocates to ServiceEntries, where Istio records the
// addresses it allocates (Addresses). Every replica serves xDS to its own proxies, so every replica
// reports which generation of each object its proxies have acknowledged (Reporter, in a ConfigMap of
// its own), and the leader adds the reports up.
//
// Writes go through the status subresource, only when what would be written differs from what the
// object holds, so a controller that restarts or a burst of proxy ACKs writes nothing new.
package status

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
	"github.com/meltemi-mesh/meltemi/control/source/kube"
)

// Kinds are Meltemi's kinds, whose status conditions the controller writes.
var Kinds = []schema.GroupVersionKind{
	{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: string(model.KindMetaRouter)},
	{Group: "metaprotocol.aeraki.io", Version: "v1alpha1", Kind: string(model.KindApplicationProtocol)},
	{Group: "redis.aeraki.io", Version: "v1alpha1", Kind: string(model.KindRedisService)},
	{Group: "redis.aeraki.io", Version: "v1alpha1", Kind: string(model.KindRedisDestination)},
	{Group: "dubbo.aeraki.io", Version: "v1alpha1", Kind: string(model.KindDubboAuthorizationPolicy)},
}

func ourKind(k model.Kind) bool {
	return slices.ContainsFunc(Kinds, func(g schema.GroupVersionKind) bool { return g.Kind == string(k) })
}

// maxMessage bounds a condition's message; the API allows 32768 bytes.
const maxMessage = 4096

// view is what one source update says about the cluster objects of Meltemi's kinds.
type view struct {
	// served is the generation of each object in the snapshot (its last good version, when the
	// current one has errors).
	served map[model.Key]int64
	// problems are the problems about each object, of every generation the update knows.
	problems map[model.Key][]model.Problem
}

func newView(u source.Update) view {
	v := view{served: map[model.Key]int64{}, problems: map[model.Key][]model.Problem{}}
	if u.Snapshot != nil {
		for _, obj := range u.Snapshot.Objects.All() {
			m := obj.Metadata()
			if ourKind(m.Kind) && kube.FromCluster(m.Origin, m.Key()) {
				v.served[m.Key()] = m.Origin.Generation
			}
		}
	}
	for _, p := range u.Problems {
		if ourKind(p.Kind) && kube.FromCluster(p.Origin, p.Key) {
			v.problems[p.Key] = append(v.problems[p.Key], p)
		}
	}
	return v
}

// knows reports whether the update has read generation gen of an object: until it has, what it says
// is about an older one.
func (v view) knows(key model.Key, gen int64) bool {
	if g, ok := v.served[key]; ok && g == gen {
		return true
	}
	return slices.ContainsFunc(v.problems[key], func(p model.Problem) bool { return p.Origin.Generation == gen })
}

// acks says how many of the connected proxies run a config made with a generation of an object, and
// how many proxies are connected.
type acks func(key model.Key, gen int64) (acked, connected int)

// conditions are the Accepted and Programmed conditions of generation gen of an object, given those
// it has (whose transition times are kept when their status stays).
func (v view) conditions(key model.Key, gen int64, proxies acks, have []metav1.Condition, now time.Time) []metav1.Condition {
	var errs, warns []model.Problem
	var reason string
	for _, p := range v.problems[key] {
		switch {
		case p.Origin.Generation != gen:
		case p.Reason != "":
			// Conflicted comes before NoHost: it is the more specific of the two.
			if reason == "" || p.Reason == model.ReasonConflicted {
				reason = string(p.Reason)
			}
			warns = append(warns, p)
		case p.Severity == model.SeverityError:
			errs = append(errs, p)
		default:
			warns = append(warns, p)
		}
	}
	servedGen, served := v.served[key]
	servedNow := served && servedGen == gen

	accepted := metav1.Condition{Type: v1alpha1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonAccepted,
		Message: "valid, and in effect"}
	programmed := metav1.Condition{Type: v1alpha1.ConditionProgrammed}
	switch {
	case len(errs) > 0:
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, v1alpha1.ReasonInvalid, describe(errs)
	case reason != "":
		accepted.Status, accepted.Reason, accepted.Message = metav1.ConditionFalse, reason, describe(warns)
	case len(warns) > 0:
		accepted.Message = "valid, and in effect; warnings: " + describe(warns)
	}
	switch {
	case !servedNow:
		msg := fmt.Sprintf("generation %d is not served: see Accepted", gen)
		if served {
			msg += fmt.Sprintf("; its last good version, generation %d, is", servedGen)
		}
		programmed.Status, programmed.Reason, programmed.Message = metav1.ConditionFalse, v1alpha1.ReasonInvalid, msg
	case reason != "":
		programmed.Status, programmed.Reason, programmed.Message = metav1.ConditionFalse, reason, "without effect: see Accepted"
	default:
		// Counts stay out of the message: it would change, and be written, with every proxy's ACK.
		switch acked, connected := proxies(key, gen); {
		case connected == 0:
			programmed.Status, programmed.Reason, programmed.Message = metav1.ConditionFalse, v1alpha1.ReasonNoProxies,
				"no proxy is connected to the controller"
		case acked < connected:
			programmed.Status, programmed.Reason, programmed.Message = metav1.ConditionFalse, v1alpha1.ReasonPending,
				"sent; not every connected proxy has acknowledged it yet"
		default:
			programmed.Status, programmed.Reason, programmed.Message = metav1.ConditionTrue, v1alpha1.ReasonProgrammed,
				"sent to and acknowledged by every connected proxy"
		}
	}
	out := slices.Clone(have)
	for _, c := range []metav1.Condition{accepted, programmed} {
		c.ObservedGeneration = gen
		c.LastTransitionTime = metav1.NewTime(now.UTC().Truncate(time.Second))
		meta.SetStatusCondition(&out, c)
	}
	return out
}

// describe lists problems as "field: message", one after the other.
func describe(problems []model.Problem) string {
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.Message
		if p.Field != "" {
			parts[i] = p.Field + ": " + p.Message
		}
	}
	msg := strings.Join(parts, "; ")
	if len(msg) > maxMessage {
		msg = strings.ToValidUTF8(msg[:maxMessage-3], "") + "..."
	}
	return msg
}

// sameConditions compares conditions as written: order and transition times aside.
func sameConditions(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		d := meta.FindStatusCondition(b, c.Type)
		if d == nil || d.Status != c.Status || d.Reason != c.Reason || d.Message != c.Message || d.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}
