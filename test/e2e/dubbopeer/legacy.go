package dubbopeer

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	hessian "github.com/apache/dubbo-go-hessian2"
)

// LegacyProvider answers sayHello the way a provider of Dubbo before 2.6.3 does: a response of type
// RESPONSE_VALUE and no attachments, whatever the client. No dubbo-go provider can be made to do that (dubbo-go
// writes response attachments to every client that sends protocol version 2.0.2), yet such providers are where
// a proxy adding response attachments matters: their clients are current ones.
type LegacyProvider struct {
	// Addr is where it listens, host:port.
	Addr string

	ln net.Listener
	wg sync.WaitGroup
}

// StartLegacyProvider starts a legacy provider on a loopback address of its own and stops it when the test
// ends. It answers every two-way request with "legacy:hello " and the request's first argument, and every
// heartbeat.
func StartLegacyProvider(t testing.TB) *LegacyProvider {
	t.Helper()
	ln, err := net.Listen("tcp", NextLoopback()+":0")
	if err != nil {
		t.Fatalf("legacy provider: %v", err)
	}
	p := &LegacyProvider{Addr: ln.Addr().String(), ln: ln}
	var mu sync.Mutex
	var conns []net.Conn
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			p.wg.Go(func() { p.serve(t, c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// serve answers one connection's frames until it closes.
func (p *LegacyProvider) serve(t testing.TB, c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		h := make([]byte, HeaderSize)
		if _, err := io.ReadFull(br, h); err != nil {
			return
		}
		body := make([]byte, binary.BigEndian.Uint32(h[12:]))
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
		flag, id := h[2], binary.BigEndian.Uint64(h[4:])
		var reply []byte
		switch {
		case flag&0x20 != 0 && flag&0x40 != 0: // a two-way event: a heartbeat
			reply = append(Header(FlagHeartbeatResponse, StatusOK, id, 1), 'N')
		case flag&0x40 != 0:
			answer, err := legacyAnswer(body)
			if err != nil {
				t.Logf("legacy provider: request %d: %v", id, err)
				msg := hessian.NewEncoder()
				_ = msg.Encode(err.Error())
				reply = append(Header(FlagResponse, StatusBadRequest, id, uint32(len(msg.Buffer()))), msg.Buffer()...)
				break
			}
			enc := hessian.NewEncoder()
			_ = enc.Encode(int32(1)) // RESPONSE_VALUE
			_ = enc.Encode(answer)
			reply = append(Header(FlagResponse, StatusOK, id, uint32(len(enc.Buffer()))), enc.Buffer()...)
		default:
			continue
		}
		if _, err := c.Write(reply); err != nil {
			return
		}
	}
}

// legacyAnswer reads a request body up to its first argument, which must be a string.
func legacyAnswer(body []byte) (string, error) {
	dec := hessian.NewDecoder(body)
	for _, field := range []string{"dubbo version", "service path", "service version", "method", "parameter types"} {
		if _, err := dec.Decode(); err != nil {
			return "", fmt.Errorf("%s: %w", field, err)
		}
	}
	arg, err := dec.Decode()
	if err != nil {
		return "", fmt.Errorf("first argument: %w", err)
	}
	s, ok := arg.(string)
	if !ok {
		return "", fmt.Errorf("first argument is a %T, not a string", arg)
	}
	return "legacy:hello " + s, nil
}
