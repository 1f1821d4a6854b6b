package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	networking "istio.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"

	dubbov1alpha1 "github.com/meltemi-mesh/meltemi/api/dubbo/v1alpha1"
	"github.com/meltemi-mesh/meltemi/api/metaprotocol/v1alpha1"
	redisv1alpha1 "github.com/meltemi-mesh/meltemi/api/redis/v1alpha1"
)

// Groups and versions of the kinds the model reads.
const (
	istioGroup  = "networking.istio.io"
	aerakiGroup = "metaprotocol.aeraki.io"
	redisGroup  = "redis.aeraki.io"
	dubboGroup  = "dubbo.aeraki.io"
)

// istioVersions are the apiVersions Istio serves its networking kinds under; the schema is the same.
var istioVersions = []string{"v1", "v1beta1", "v1alpha3"}

// Decode reads one manifest, given as JSON, into an object and checks it (Validate). The key is
// whatever identity could be read, even when the object could not: it lets a source keep serving
// the last good version of an object that turned bad. obj is nil when there is an error, or when
// the manifest is of a kind the model does not hold (reported as a warning). Unknown fields are
// errors naming the field's path.
func Decode(origin Origin, doc []byte) (obj Object, key Key, problems []Problem) {
	key, problems = readKey(origin, doc)
	if HasErrors(problems) || key.Kind == "" {
		return nil, key, problems
	}
	meta := &Meta{Kind: key.Kind, Namespace: key.Namespace, Name: key.Name, Origin: origin}
	r := &reporter{meta: meta, out: problems}
	switch key.Kind {
	case KindServiceEntry:
		spec := &networking.ServiceEntry{}
		if status, ok := decodeIstio(doc, meta, spec, r); ok {
			obj = &ServiceEntry{Meta: *meta, Spec: spec, StatusAddresses: statusAddresses(status, r)}
		}
	case KindDestinationRule:
		spec := &networking.DestinationRule{}
		if _, ok := decodeIstio(doc, meta, spec, r); ok {
			obj = &DestinationRule{Meta: *meta, Spec: spec}
		}
	case KindWorkloadEntry:
		spec := &networking.WorkloadEntry{}
		if _, ok := decodeIstio(doc, meta, spec, r); ok {
			obj = &WorkloadEntry{Meta: *meta, Spec: spec}
		}
	case KindMetaRouter:
		var mr v1alpha1.MetaRouter
		if checkDurations(doc, &mr, r) && decodeStrict(doc, &mr, r) {
			setMeta(meta, &mr.ObjectMeta)
			obj = &MetaRouter{Meta: *meta, Spec: &mr.Spec}
		}
	case KindApplicationProtocol:
		var ap v1alpha1.ApplicationProtocol
		if decodeStrict(doc, &ap, r) {
			setMeta(meta, &ap.ObjectMeta)
			obj = &ApplicationProtocol{Meta: *meta, Spec: &ap.Spec}
		}
	case KindRedisService:
		var rs redisv1alpha1.RedisService
		if decodeStrict(doc, &rs, r) {
			setMeta(meta, &rs.ObjectMeta)
			obj = &RedisService{Meta: *meta, Spec: &rs.Spec}
		}
	case KindRedisDestination:
		var rd redisv1alpha1.RedisDestination
		if decodeStrict(doc, &rd, r) {
			setMeta(meta, &rd.ObjectMeta)
			obj = &RedisDestination{Meta: *meta, Spec: &rd.Spec}
		}
	case KindDubboAuthorizationPolicy:
		var ap dubbov1alpha1.DubboAuthorizationPolicy
		if decodeStrict(doc, &ap, r) {
			setMeta(meta, &ap.ObjectMeta)
			obj = &DubboAuthorizationPolicy{Meta: *meta, Spec: &ap.Spec}
		}
	}
	if obj == nil {
		return nil, key, r.out
	}
	r.out = append(r.out, Validate(obj)...)
	if HasErrors(r.out) {
		return nil, key, r.out
	}
	return obj, key, r.out
}

// readKey reads kind, apiVersion and name without a schema, so that a document whose spec is wrong
// is still known by its name. The returned Kind is empty for a kind the model does not hold.
func readKey(origin Origin, doc []byte) (Key, []Problem) {
	var head map[string]any
	var key Key
	fail := func(field, format string, args ...any) (Key, []Problem) {
		return key, []Problem{{Origin: origin, Key: key, Field: field, Message: fmt.Sprintf(format, args...)}}
	}
	if err := json.Unmarshal(doc, &head); err != nil || head == nil {
		return fail("", "not a Kubernetes object: a mapping with apiVersion, kind and metadata is expected")
	}
	kind, _ := head["kind"].(string)
	apiVersion, _ := head["apiVersion"].(string)
	if md, ok := head["metadata"].(map[string]any); ok {
		key.Name, _ = md["name"].(string)
		key.Namespace, _ = md["namespace"].(string)
	}
	if key.Namespace == "" {
		key.Namespace = DefaultNamespace
	}
	key.Kind = Kind(kind)
	switch {
	case kind == "":
		return fail("kind", "kind is required")
	case apiVersion == "":
		return fail("apiVersion", "apiVersion is required")
	}
	group, version, _ := strings.Cut(apiVersion, "/")
	var wantGroup string
	var versions []string
	switch key.Kind {
	case KindServiceEntry, KindDestinationRule, KindWorkloadEntry:
		wantGroup, versions = istioGroup, istioVersions
	case KindMetaRouter, KindApplicationProtocol:
		wantGroup, versions = aerakiGroup, []string{"v1alpha1"}
	case KindRedisService, KindRedisDestination:
		wantGroup, versions = redisGroup, []string{"v1alpha1"}
	case KindDubboAuthorizationPolicy:
		wantGroup, versions = dubboGroup, []string{"v1alpha1"}
	default:
		key.Kind = ""
		return key, []Problem{{Origin: origin, Key: Key{Kind: Kind(kind), Namespace: key.Namespace, Name: key.Name},
			Message: fmt.Sprintf("kind %s (%s) is not read by Meltemi; ignored", kind, apiVersion), Severity: SeverityWarning}}
	}
	if group != wantGroup || !slices.Contains(versions, version) {
		return fail("apiVersion", "%s %q is not supported; use %s/%s", kind, apiVersion, wantGroup, strings.Join(versions, ", "+wantGroup+"/"))
	}
	if key.Name == "" {
		return fail("metadata.name", "name is required")
	}
	return key, nil
}

// istioManifest is the envelope of an Istio object; the spec is a protobuf message, decoded by protojson.
type istioManifest struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              json.RawMessage `json:"spec"`
	// Status is written by controllers; of it, only a ServiceEntry's addresses are read.
	Status json.RawMessage `json:"status,omitempty"`
}

// decodeIstio decodes an Istio object's spec into spec and returns its status, undecoded.
func decodeIstio(doc []byte, meta *Meta, spec proto.Message, r *reporter) (json.RawMessage, bool) {
	var m istioManifest
	if !decodeStrict(doc, &m, r) {
		return nil, false
	}
	setMeta(meta, &m.ObjectMeta)
	if len(m.Spec) == 0 || bytes.Equal(m.Spec, []byte("null")) {
		r.errorf("spec", "spec is required")
		return nil, false
	}
	var generic any
	dec := json.NewDecoder(bytes.NewReader(m.Spec))
	dec.UseNumber()
	if err := dec.Decode(&generic); err != nil {
		r.errorf("spec", "%v", err)
		return nil, false
	}
	before := len(r.out)
	checkProtoFields(spec.ProtoReflect().Descriptor(), generic, "spec", r)
	if len(r.out) > before {
		// The walk names the fields; protojson would only repeat the first of them, less precisely.
		return nil, false
	}
	// Istio's own decoder reads durations the way Go writes them ("3m", "1h30m"), and its documentation
	// uses that form; protojson wants seconds. The walk checked every duration, so each parses.
	canonicalDurations(spec.ProtoReflect().Descriptor(), generic)
	js, err := json.Marshal(generic)
	if err != nil {
		r.errorf("spec", "%v", err)
		return nil, false
	}
	if err := protojson.Unmarshal(js, spec); err != nil {
		r.errorf("spec", "%s", protoErrorPrefix.ReplaceAllString(err.Error(), ""))
		return nil, false
	}
	return m.Status, true
}

// statusAddresses reads the addresses recorded in a ServiceEntry's status (Istio's
// ServiceEntryStatus.addresses, each a value and the host it is for). Controllers write the status, so
// what cannot be read is a warning and left out: the entry itself is fine.
func statusAddresses(status json.RawMessage, r *reporter) []StatusAddress {
	if len(status) == 0 {
		return nil
	}
	var st struct {
		Addresses []struct {
			Value string `json:"value"`
			Host  string `json:"host"`
		} `json:"addresses"`
	}
	if err := json.Unmarshal(status, &st); err != nil {
		r.warnf("status.addresses", "cannot be read (%v); ignored", strings.TrimPrefix(err.Error(), "json: "))
		return nil
	}
	var out []StatusAddress
	for i, a := range st.Addresses {
		ip, err := netip.ParseAddr(a.Value)
		if err != nil || a.Host == "" {
			r.warnf(fmt.Sprintf("status.addresses[%d]", i), "needs an IP address as value and a host; ignored")
			continue
		}
		out = append(out, StatusAddress{Host: a.Host, IP: ip.Unmap()})
	}
	return out
}

const durationName = "google.protobuf.Duration"

// canonicalDurations rewrites, in place, every google.protobuf.Duration of a spec held as generic JSON into
// the form protojson reads: whole seconds and nanoseconds.
func canonicalDurations(md protoreflect.MessageDescriptor, v any) {
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	fields := md.Fields()
	for k, val := range obj {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		switch {
		case fd == nil:
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if vd := fd.MapValue().Message(); ok && vd != nil {
				for mk, mv := range m {
					m[mk] = canonicalValue(vd, mv)
				}
			}
		case fd.Message() == nil:
		case fd.IsList():
			if list, ok := val.([]any); ok {
				for i, e := range list {
					list[i] = canonicalValue(fd.Message(), e)
				}
			}
		default:
			obj[k] = canonicalValue(fd.Message(), val)
		}
	}
}

func canonicalValue(md protoreflect.MessageDescriptor, v any) any {
	if string(md.FullName()) != durationName {
		canonicalDurations(md, v)
		return v
	}
	s, ok := v.(string)
	if !ok {
		return v
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return v
	}
	sign := ""
	if d < 0 {
		sign, d = "-", -d
	}
	return fmt.Sprintf("%s%d.%09ds", sign, d/time.Second, d%time.Second)
}

// protoErrorPrefix matches what protojson puts before its messages. Its line numbers count lines of
// the JSON the YAML was turned into, which the user never saw. protobuf-go randomly uses a
// non-breaking space after "proto:" so that nobody depends on the text; this only strips it.
var protoErrorPrefix = regexp.MustCompile(`^proto:[\s\x{a0}]*(\(line \d+:\d+\):[\s\x{a0}]*)?`)

// checkProtoFields walks a spec as generic JSON along the message's descriptor and reports fields the
// message does not have and enum values it does not know, each by its path, which protojson's own
// errors do not give.
func checkProtoFields(md protoreflect.MessageDescriptor, v any, path string, r *reporter) {
	obj, ok := v.(map[string]any)
	if !ok {
		if v != nil {
			r.errorf(path, "expected an object, got %s", jsonType(v))
		}
		return
	}
	fields := md.Fields()
	for _, k := range slices.Sorted(maps.Keys(obj)) {
		fd := fields.ByJSONName(k)
		if fd == nil {
			fd = fields.ByName(protoreflect.Name(k))
		}
		fieldPath := path + "." + k
		if fd == nil {
			r.errorf(fieldPath, "unknown field")
			continue
		}
		val := obj[k]
		switch {
		case val == nil:
		case fd.IsMap():
			m, ok := val.(map[string]any)
			if !ok {
				r.errorf(fieldPath, "expected a map, got %s", jsonType(val))
				continue
			}
			for _, mk := range slices.Sorted(maps.Keys(m)) {
				checkProtoValue(fd.MapValue(), m[mk], fieldPath+"."+mk, r)
			}
		case fd.IsList():
			list, ok := val.([]any)
			if !ok {
				r.errorf(fieldPath, "expected a list, got %s", jsonType(val))
				continue
			}
			for i, e := range list {
				checkProtoValue(fd, e, fmt.Sprintf("%s[%d]", fieldPath, i), r)
			}
		default:
			checkProtoValue(fd, val, fieldPath, r)
		}
	}
}

func checkProtoValue(fd protoreflect.FieldDescriptor, v any, path string, r *reporter) {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		// Well-known types (wrappers, Struct) have JSON forms of their own; protojson checks them. Durations
		// are checked here, in the forms Istio's decoder reads, so that a bad one is named by its path.
		switch name := string(fd.Message().FullName()); {
		case name == durationName:
			s, ok := v.(string)
			if !ok {
				r.errorf(path, "expected a duration such as \"30s\" or \"1m\", got %s", jsonType(v))
			} else if _, err := time.ParseDuration(s); err != nil {
				r.errorf(path, "%q is not a duration such as \"30s\" or \"1m\"", s)
			}
		case !strings.HasPrefix(name, "google.protobuf."):
			checkProtoFields(fd.Message(), v, path, r)
		}
	case protoreflect.BoolKind:
		if _, ok := v.(bool); !ok {
			r.errorf(path, "expected a boolean, got %s", jsonType(v))
		}
	case protoreflect.StringKind, protoreflect.BytesKind:
		if _, ok := v.(string); !ok {
			r.errorf(path, "expected a string, got %s", jsonType(v))
		}
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind,
		protoreflect.FloatKind, protoreflect.DoubleKind:
		// protojson also takes numbers written as strings; whether the number fits is left to it.
		s, isString := v.(string)
		_, isNumber := v.(json.Number)
		if _, err := strconv.ParseFloat(s, 64); !isNumber && (!isString || err != nil) {
			r.errorf(path, "expected a number, got %s", jsonType(v))
		}
	case protoreflect.EnumKind:
		if s, ok := v.(string); ok && fd.Enum().Values().ByName(protoreflect.Name(s)) == nil {
			values := fd.Enum().Values()
			names := make([]string, values.Len())
			for i := range values.Len() {
				names[i] = string(values.Get(i).Name())
			}
			r.errorf(path, "unknown value %q; one of %s", s, strings.Join(names, ", "))
		}
	}
}

func jsonType(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

// decodeStrict decodes a Kubernetes-style object, reporting unknown and duplicate fields by path.
func decodeStrict(doc []byte, v any, r *reporter) bool {
	strictErrs, err := sigsjson.UnmarshalStrict(doc, v)
	if err != nil {
		field, msg := describeJSONError(err)
		r.errorf(field, "%s", msg)
		return false
	}
	for _, e := range strictErrs {
		var fe sigsjson.FieldError
		if errors.As(e, &fe) {
			// The message is `unknown field "path"`; the path goes in the field column.
			msg, _, _ := strings.Cut(fe.Error(), ` "`)
			r.errorf(fe.FieldPath(), "%s", msg)
		} else {
			r.errorf("", "%v", e)
		}
	}
	return len(strictErrs) == 0
}

// durationType is the type of every duration field of the Aeraki kinds.
var durationType = reflect.TypeFor[v1alpha1.Duration]()

// checkDurations reports each duration of a manifest that does not parse, by its path: encoding/json passes
// on a field's own decoding error without saying which field it was. It reports true when there are none.
func checkDurations(doc []byte, v any, r *reporter) bool {
	var generic any
	if err := json.Unmarshal(doc, &generic); err != nil {
		return true // decodeStrict reports it
	}
	before := len(r.out)
	walkDurations(reflect.TypeOf(v), generic, "", r)
	return len(r.out) == before
}

func walkDurations(t reflect.Type, v any, path string, r *reporter) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		switch s := v.(type) {
		case nil:
		case string:
			if _, err := time.ParseDuration(s); err != nil {
				r.errorf(path, "%q is not a duration such as \"2s\" or \"500ms\"", s)
			}
		default:
			r.errorf(path, "expected a duration such as \"2s\", got %s", jsonType(v))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		// Only this module's types hold durations; Kubernetes' metadata is left to the decoder.
		if !ok || t.PkgPath() != durationType.PkgPath() {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			switch {
			case f.Anonymous && name == "":
				walkDurations(f.Type, v, path, r)
			case name != "" && name != "-":
				if fv, ok := obj[name]; ok {
					walkDurations(f.Type, fv, joinPath(path, name), r)
				}
			}
		}
	case reflect.Slice:
		list, _ := v.([]any)
		for i, e := range list {
			walkDurations(t.Elem(), e, fmt.Sprintf("%s[%d]", path, i), r)
		}
	case reflect.Map:
		m, _ := v.(map[string]any)
		for _, k := range slices.Sorted(maps.Keys(m)) {
			walkDurations(t.Elem(), m[k], joinPath(path, k), r)
		}
	}
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// typeError matches encoding/json's UnmarshalTypeError text, which carries the field's path
// (without list indices) between the struct's name and "of type".
var typeError = regexp.MustCompile(`^json: cannot unmarshal (.+) into Go struct field [^.\s]*\.(\S+) of type (.+)$`)

func describeJSONError(err error) (field, msg string) {
	if m := typeError.FindStringSubmatch(err.Error()); m != nil {
		return m[2], fmt.Sprintf("expected %s, got %s", m[3], m[1])
	}
	return "", strings.TrimPrefix(err.Error(), "json: ")
}

func setMeta(meta *Meta, om *metav1.ObjectMeta) {
	meta.Labels = om.Labels
	meta.Annotations = om.Annotations
}
