package codec

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Registration describes a codec to the proxy.
type Registration struct {
	// Name is the codec's name in config, as Aeraki spells it: "aeraki.meta_protocol.codec.dubbo".
	Name string
	// Protocol is the application protocol's short name: "dubbo". Port names and ApplicationProtocol
	// manifests use it, and the request_protocol metric label shows it.
	Protocol string
	// New builds a Factory from the codec's config, a JSON object (empty for the defaults). It rejects unknown
	// fields and names the field that is wrong.
	New func(config json.RawMessage) (Factory, error)
}

// Registry holds the codecs a binary offers. The binary's main fills it explicitly; nothing registers itself
// from init.
type Registry struct {
	mu         sync.RWMutex
	byName     map[string]Registration
	byProtocol map[string]Registration
}

// NewRegistry returns a registry holding regs.
func NewRegistry(regs ...Registration) (*Registry, error) {
	r := &Registry{}
	for _, reg := range regs {
		if err := r.Register(reg); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Register adds a codec. Names and protocols must be unique.
func (r *Registry) Register(reg Registration) error {
	if reg.Name == "" || reg.Protocol == "" || reg.New == nil {
		return fmt.Errorf("codec registration %q: name, protocol and constructor are required", reg.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byName == nil {
		r.byName = map[string]Registration{}
		r.byProtocol = map[string]Registration{}
	}
	if _, dup := r.byName[reg.Name]; dup {
		return fmt.Errorf("codec %q registered twice", reg.Name)
	}
	proto := strings.ToLower(reg.Protocol)
	if _, dup := r.byProtocol[proto]; dup {
		return fmt.Errorf("protocol %q of codec %q registered twice", reg.Protocol, reg.Name)
	}
	r.byName[reg.Name] = reg
	r.byProtocol[proto] = reg
	return nil
}

// Lookup returns the codec registered under name.
func (r *Registry) Lookup(name string) (Registration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byName[name]
	return reg, ok
}

// ByProtocol returns the codec of an application protocol ("dubbo"), case-insensitively.
func (r *Registry) ByProtocol(protocol string) (Registration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byProtocol[strings.ToLower(protocol)]
	return reg, ok
}

// Names returns the registered codec names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// DecodeConfig decodes a codec's JSON config into v, rejecting unknown fields. Empty config leaves v as it is.
func DecodeConfig(config json.RawMessage, v any) error {
	if len(strings.TrimSpace(string(config))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(config)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("codec config: %w", err)
	}
	return nil
}
