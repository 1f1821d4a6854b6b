// Package dubbopeer runs real dubbo-go peers (providers and consumers of the classic "dubbo" protocol with
// Hessian2, no registry) and raw Dubbo frames for end-to-end tests of the proxy.
//
// Providers run in child processes: dubbo-go v3.3.1 keeps its exporters in one process-wide map keyed by
// service key, so two providers of the same interface in one process would answer with the same handler, and
// its server API has no way to stop one server. A test binary that starts providers must call RunProvider from
// its TestMain; the harness re-executes that binary in provider mode.
package dubbopeer

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"

	"dubbo.apache.org/dubbo-go/v3/common/constant"
)

// Interface is the Dubbo interface the test providers export and the consumers call.
const Interface = "org.apache.dubbo.samples.GreetService"

// Method names as they travel on the wire; Java peers spell them in lower camel case, and dubbo-go providers
// answer to either case of the first letter.
const (
	MethodSayHello = "sayHello"
	MethodEcho     = "echo"
	MethodJoin     = "join"
	MethodInspect  = "inspect"
	MethodNotify   = "notify"
	MethodNotified = "notified"
)

// Report is what a provider saw of one Inspect call.
type Report struct {
	// Version is the provider's version label.
	Version string `json:"version"`
	// Tag is the argument of the call, so concurrent callers can check they got their own answer.
	Tag string `json:"tag"`
	// Remote is the peer address of the connection the call arrived on (the proxy's upstream connection).
	Remote string `json:"remote"`
	// Attachments are the string attachments the call carried.
	Attachments map[string]string `json:"attachments"`
}

// GreetService is the provider's service. dubbo-go finds its methods by reflection and refuses unexported
// types.
type GreetService struct {
	version string

	mu       sync.Mutex
	notified map[string]int32
}

func newGreetService(version string) *GreetService {
	return &GreetService{version: version, notified: map[string]int32{}}
}

// Reference names the service to dubbo-go's service map.
func (s *GreetService) Reference() string { return "GreetService" }

// SayHello answers with the provider's version label, so tests can tell which subset served a call.
func (s *GreetService) SayHello(_ context.Context, name string) (string, error) {
	if err := misbehave(MethodSayHello); err != nil {
		return "", err
	}
	return s.version + ":hello " + name, nil
}

// Echo returns its argument unchanged.
func (s *GreetService) Echo(_ context.Context, text string) (string, error) {
	if err := misbehave(MethodEcho); err != nil {
		return "", err
	}
	return text, nil
}

// Join exercises a call with several arguments of different Hessian types.
func (s *GreetService) Join(_ context.Context, prefix string, n int32, suffix string) (string, error) {
	return fmt.Sprintf("%s:%s-%d-%s", s.version, prefix, n, suffix), nil
}

// Inspect reports the attachments and connection the call arrived with, as JSON: returning a string keeps the
// consumer's Hessian decoding trivial.
func (s *GreetService) Inspect(ctx context.Context, tag string) (string, error) {
	r := Report{Version: s.version, Tag: tag, Attachments: map[string]string{}}
	if raw, ok := ctx.Value(constant.AttachmentKey).(map[string]any); ok {
		for k, v := range raw {
			switch val := v.(type) {
			case string:
				r.Attachments[k] = val
			case []string:
				if len(val) > 0 {
					r.Attachments[k] = val[0]
				}
			}
		}
		if remote, ok := raw[constant.RemoteAddr].(string); ok {
			r.Remote = remote
		}
	}
	delete(r.Attachments, constant.RemoteAddr)
	delete(r.Attachments, constant.LocalAddr)
	out, err := json.Marshal(r)
	return string(out), err
}

// Notify records a tag; consumers send it oneway.
func (s *GreetService) Notify(_ context.Context, tag string) error {
	s.mu.Lock()
	s.notified[tag]++
	s.mu.Unlock()
	return nil
}

// Notified says how many times Notify saw tag.
func (s *GreetService) Notified(_ context.Context, tag string) (int32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.notified[tag], nil
}

// SortedKeys returns the attachment keys of r in order, for readable failure messages.
func (r Report) SortedKeys() []string {
	keys := make([]string, 0, len(r.Attachments))
	for k := range r.Attachments {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
