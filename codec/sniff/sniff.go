// Package sniff is a codec that serves several protocols on one port: each connection's codec is chosen from
// the first bytes the peer sends, by asking every candidate codec's Sniffer.
//
// A listener that names this codec accepts, say, Dubbo, Thrift, bRPC and tRPC clients on the same address, so
// a service need not say in its port name which protocol it speaks. Routes match on the metadata of whichever
// protocol a request arrives in. The proxy opens upstream connections with the codec a client's connection
// chose (codec.Chooser), so each protocol has upstream connections of its own.
package sniff

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/meltemi-mesh/meltemi/codec"
)

// Name is the codec's name in config; Protocol names it in port names (tcp-metaprotocol-auto) and manifests.
const (
	Name     = "meltemi.codec.sniff"
	Protocol = "auto"
)

// Config lists the candidates by codec name, in the order they are asked; empty means every candidate the
// binary offers.
type Config struct {
	Codecs []string `json:"codecs,omitempty"`
}

// Registration returns the sniffing codec over candidates: the registrations of the binary's other codecs.
// Those whose factories are not Sniffers are left out, since nothing could choose them.
func Registration(candidates ...codec.Registration) codec.Registration {
	return codec.Registration{Name: Name, Protocol: Protocol, New: func(raw json.RawMessage) (codec.Factory, error) {
		return newFactory(raw, candidates)
	}}
}

func newFactory(raw json.RawMessage, candidates []codec.Registration) (codec.Factory, error) {
	var cfg Config
	if err := codec.DecodeConfig(raw, &cfg); err != nil {
		return nil, err
	}
	byName := map[string]codec.Registration{}
	var names []string
	for _, reg := range candidates {
		if reg.Name != Name {
			byName[reg.Name] = reg
			names = append(names, reg.Name)
		}
	}
	if len(cfg.Codecs) > 0 {
		names = cfg.Codecs
	}
	f := &Factory{}
	for i, name := range names {
		reg, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("codecs[%d]: no codec %q in this binary", i, name)
		}
		inner, err := reg.New(nil)
		if err != nil {
			return nil, fmt.Errorf("codecs[%d] (%s): %w", i, name, err)
		}
		sn, ok := inner.(codec.Sniffer)
		if !ok {
			if len(cfg.Codecs) > 0 {
				return nil, fmt.Errorf("codecs[%d]: codec %q cannot recognise its protocol from the first bytes", i, name)
			}
			continue
		}
		f.candidates = append(f.candidates, candidate{name: name, factory: inner, sniffer: sn})
	}
	if len(f.candidates) == 0 {
		return nil, errors.New("codecs: no candidate codec can recognise its protocol from the first bytes")
	}
	return f, nil
}

// Factory makes sniffing codecs over its candidates.
type Factory struct {
	candidates []candidate
}

type candidate struct {
	name    string
	factory codec.Factory
	sniffer codec.Sniffer
}

// NewCodec returns a codec that picks its protocol from the first frame it reads (or encodes).
func (f *Factory) NewCodec(side codec.Side) codec.Codec { return &Codec{f: f, side: side} }

// Properties says that the proxy may multiplex: every candidate must, since an upstream connection's protocol
// is not known before its first request.
func (f *Factory) Properties() codec.Properties {
	for _, c := range f.candidates {
		if !c.factory.Properties().Multiplexing {
			return codec.Properties{}
		}
	}
	return codec.Properties{Multiplexing: true}
}

// Sniff answers Mine when any candidate does, NeedMore while any candidate needs more, NotMine otherwise.
func (f *Factory) Sniff(data []byte) codec.SniffResult {
	_, r := f.pick(data)
	return r
}

// pick returns the first candidate that recognises data.
func (f *Factory) pick(data []byte) (*candidate, codec.SniffResult) {
	result := codec.NotMine
	for i := range f.candidates {
		switch f.candidates[i].sniffer.Sniff(data) {
		case codec.Mine:
			return &f.candidates[i], codec.Mine
		case codec.NeedMore:
			result = codec.NeedMore
		}
	}
	return nil, result
}

// Codec is one connection's codec: a candidate's, once the first bytes have chosen it.
type Codec struct {
	f       *Factory
	side    codec.Side
	inner   codec.Codec // nil until chosen; set on the connection's goroutine, before any reply is built
	name    string
	factory codec.Factory
}

// choose settles the connection's protocol from data; false if the bytes fit no candidate (yet: err says).
func (c *Codec) choose(data []byte) error {
	cand, r := c.f.pick(data[:min(len(data), 16)])
	if r == codec.NeedMore && len(data) >= 16 {
		cand, r = c.f.pick(data)
	}
	switch r {
	case codec.Mine:
		c.inner, c.name, c.factory = cand.factory.NewCodec(c.side), cand.name, cand.factory
		return nil
	case codec.NeedMore:
		return codec.ErrIncomplete
	}
	return codec.Errorf(false, "sniff: the first bytes (% x) start none of the protocols of %s", data[:min(len(data), 8)],
		c.f.names())
}

func (f *Factory) names() string {
	var b strings.Builder
	for i, c := range f.candidates {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.name)
	}
	return b.String()
}

// Chosen returns the codec the connection's first bytes chose.
func (c *Codec) Chosen() (string, codec.Factory, bool) {
	if c.inner == nil {
		return "", nil, false
	}
	return c.name, c.factory, true
}

// Decode chooses the protocol on the first frame, then decodes with its codec.
func (c *Codec) Decode(buf []byte, msg *codec.Message) (int, error) {
	if c.inner == nil {
		if err := c.choose(buf); err != nil {
			return 0, err
		}
	}
	return c.inner.Decode(buf, msg)
}

// SetID rewrites the id with the chosen codec. A codec that never decoded (one the proxy made to re-encode a
// request) chooses from the message's frame.
func (c *Codec) SetID(msg *codec.Message, id uint64) {
	if c.inner == nil && c.choose(msg.Frame) != nil {
		msg.ID = id
		return
	}
	c.inner.SetID(msg, id)
}

// Encode re-encodes with the chosen codec, choosing from the message's frame if need be.
func (c *Codec) Encode(dst []byte, msg *codec.Message, mutation *codec.Mutation) ([]byte, error) {
	if c.inner == nil {
		if err := c.choose(msg.Frame); err != nil {
			return dst, err
		}
	}
	return c.inner.Encode(dst, msg, mutation)
}

// HeartbeatReply answers with the chosen codec; a heartbeat has always been decoded by it.
func (c *Codec) HeartbeatReply(dst []byte, req *codec.Message) []byte {
	if c.inner == nil {
		return dst
	}
	return c.inner.HeartbeatReply(dst, req)
}

// ErrorReply answers with the chosen codec. Before any frame chose one there is no request to answer.
func (c *Codec) ErrorReply(dst []byte, req *codec.Message, kind codec.ErrorKind, detail string) ([]byte, int32) {
	if c.inner == nil {
		return dst, 0
	}
	return c.inner.ErrorReply(dst, req, kind, detail)
}

var (
	_ codec.Factory = (*Factory)(nil)
	_ codec.Sniffer = (*Factory)(nil)
	_ codec.Codec   = (*Codec)(nil)
	_ codec.Chooser = (*Codec)(nil)
)
