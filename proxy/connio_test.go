package proxy

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestConnWriterKeepsFramesWhole writes length-prefixed frames from many goroutines at once and checks that
// every frame arrives whole: batching under contention may join frames but never interleave them.
func TestConnWriterKeepsFramesWhole(t *testing.T) {
	client, server := tcpPair(t)
	w := &connWriter{conn: client}
	const writers, frames = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range frames {
				body := bytes.Repeat([]byte{byte(g)}, 1+(i*37)%3000)
				frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
				if err := w.write(append(frame, body...)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	got := make(chan error, 1)
	go func() {
		for range writers * frames {
			var hdr [4]byte
			if _, err := io.ReadFull(server, hdr[:]); err != nil {
				got <- err
				return
			}
			body := make([]byte, binary.BigEndian.Uint32(hdr[:]))
			if _, err := io.ReadFull(server, body); err != nil {
				got <- err
				return
			}
			for _, b := range body {
				if b != body[0] {
					got <- io.ErrUnexpectedEOF
					return
				}
			}
		}
		got <- nil
	}()
	wg.Wait()
	if err := <-got; err != nil {
		t.Fatalf("reading frames: %v", err)
	}
}

func TestPendingWriterQueuesUntilAttached(t *testing.T) {
	client, server := tcpPair(t)
	w := newPendingWriter()
	for _, s := range []string{"one ", "two ", "three"} {
		if err := w.write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.attach(client); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len("one two three"))
	if _, err := io.ReadFull(server, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != "one two three" {
		t.Fatalf("got %q", buf)
	}
	w.fail(net.ErrClosed)
	if err := w.write([]byte("x")); err == nil {
		t.Fatal("write after fail succeeded")
	}
}

// TestFrameReaderHoldsNoBufferWhenIdle checks the promise that an idle connection holds no read buffer.
func TestFrameReaderHoldsNoBufferWhenIdle(t *testing.T) {
	client, server := tcpPair(t)
	fr := newFrameReader(server)
	if fr.raw == nil {
		t.Fatal("a TCP connection should be read through its raw socket")
	}
	if _, err := client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := fr.fill(0); err != nil {
		t.Fatal(err)
	}
	if string(fr.data()) != "hello" {
		t.Fatalf("data = %q", fr.data())
	}
	fr.consume(5)
	done := make(chan error, 1)
	go func() { done <- fr.fill(0) }()
	client.Write([]byte("!"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if string(fr.data()) != "!" {
		t.Fatalf("data = %q", fr.data())
	}
	fr.consume(1)
	fr.release()
	if fr.buf != nil {
		t.Fatal("buffer kept after everything was consumed")
	}
	// A frame larger than the pooled buffer gets room for all of it.
	big := bytes.Repeat([]byte("x"), 3*readBufSize)
	go client.Write(big)
	for len(fr.data()) < len(big) {
		if err := fr.fill(len(big)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(fr.data(), big) {
		t.Fatal("large frame corrupted")
	}
	client.Close()
	fr.consume(len(big))
	if err := fr.fill(0); err != io.EOF {
		t.Fatalf("fill after close = %v, want EOF", err)
	}
}
