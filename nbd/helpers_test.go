package nbd

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// testLogger logs to the test at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// testServer is a server on a unix socket (and optionally loopback TCP),
// stopped at the end of the test.
type testServer struct {
	*Server
	sock string
	tcp  string // host:port, "" unless asked
}

// mustServe starts a server with the given exports on a unix socket.
func mustServe(t testing.TB, withTCP bool, exports map[string]Backend) *testServer {
	t.Helper()
	s := NewServer(testLogger(t))
	for name, b := range exports {
		if _, err := s.AddExport(name, b); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	ts := &testServer{Server: s, sock: filepath.Join(dir, "s")}
	l, err := net.Listen("unix", ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	listeners := []net.Listener{l}
	if withTCP {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ts.tcp = tl.Addr().String()
		listeners = append(listeners, tl)
	}
	errs := make(chan error, len(listeners))
	for _, l := range listeners {
		go func() { errs <- s.Serve(l) }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close server: %v", err)
		}
		for range listeners {
			if err := <-errs; err != nil {
				t.Errorf("serve: %v", err)
			}
		}
	})
	return ts
}

// uri is the NBD URI of an export on the unix socket.
func (ts *testServer) uri(export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, ts.sock)
}

// rawClient speaks the protocol by hand, for checks that real clients
// hide (exact error codes, pipelining, half-finished sessions).
type rawClient struct {
	t     testing.TB
	nc    net.Conn
	flags uint16 // transmission flags
	size  uint64
}

// dialRaw connects and does the handshake: optionally structured replies
// and base:allocation, then NBD_OPT_GO.
func dialRaw(t testing.TB, sock, export string, structured bool) *rawClient {
	t.Helper()
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &rawClient{t: t, nc: nc}
	hello := c.readN(18)
	if binary.BigEndian.Uint64(hello) != magicInit || binary.BigEndian.Uint64(hello[8:]) != magicOpt {
		t.Fatalf("bad greeting % x", hello)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flagFixedNewstyle|flagNoZeroes))
	if structured {
		if typ, _ := c.option(optStructuredReply, nil); typ != repAck {
			t.Fatalf("structured reply: reply %#x", typ)
		}
		q := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
		q = append(q, export...)
		q = binary.BigEndian.AppendUint32(q, 1)
		q = binary.BigEndian.AppendUint32(q, uint32(len(metaBaseAllocation)))
		q = append(q, metaBaseAllocation...)
		if typ, _ := c.option(optSetMetaContext, q); typ != repMetaContext {
			t.Fatalf("set meta context: reply %#x", typ)
		}
		if typ, _ := c.optReply(optSetMetaContext); typ != repAck {
			t.Fatalf("set meta context: final reply %#x", typ)
		}
	}
	if typ := c.goExport(export); typ != repAck {
		t.Fatalf("go %q: reply %#x", export, typ)
	}
	return c
}

// goExport sends NBD_OPT_GO and reads replies up to the final one.
func (c *rawClient) goExport(export string) uint32 {
	p := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	p = append(p, export...)
	p = binary.BigEndian.AppendUint16(p, 0)
	typ, data := c.option(optGo, p)
	for typ == repInfo {
		if binary.BigEndian.Uint16(data) == infoExport {
			c.size = binary.BigEndian.Uint64(data[2:])
			c.flags = binary.BigEndian.Uint16(data[10:])
		}
		typ, data = c.optReply(optGo)
	}
	return typ
}

func (c *rawClient) option(code uint32, data []byte) (uint32, []byte) {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
	return c.optReply(code)
}

func (c *rawClient) optReply(code uint32) (uint32, []byte) {
	h := c.readN(20)
	if binary.BigEndian.Uint64(h) != magicOptReply || binary.BigEndian.Uint32(h[8:]) != code {
		c.t.Fatalf("bad option reply % x", h)
	}
	return binary.BigEndian.Uint32(h[12:]), c.readN(int(binary.BigEndian.Uint32(h[16:])))
}

func (c *rawClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *rawClient) readN(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if err := c.nc.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		c.t.Fatal(err)
	}
	if _, err := io.ReadFull(c.nc, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// send writes a request (with its payload for WRITE).
func (c *rawClient) send(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.write(appendRequest(nil, typ, flags, handle, off, length, payload))
}

func appendRequest(b []byte, typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// reply is one reply as the raw client read it: a simple reply, or one
// structured chunk.
type reply struct {
	handle  uint64
	errno   uint32 // simple reply error, or structured error chunk's
	typ     uint16 // structured chunk type; 0 for simple replies
	flags   uint16
	payload []byte // structured payload; simple READ data is read by the caller
}

// recv reads one reply message. A simple reply to a read carries its data
// after the header; pass readLen to read it into payload.
func (c *rawClient) recv(readLen int) reply {
	c.t.Helper()
	m := binary.BigEndian.Uint32(c.readN(4))
	switch m {
	case magicSimpleReply:
		h := c.readN(12)
		r := reply{errno: binary.BigEndian.Uint32(h), handle: binary.BigEndian.Uint64(h[4:]), flags: replyFlagDone}
		if r.errno == 0 && readLen > 0 {
			r.payload = c.readN(readLen)
		}
		return r
	case magicStructReply:
		h := c.readN(16)
		r := reply{
			flags:  binary.BigEndian.Uint16(h),
			typ:    binary.BigEndian.Uint16(h[2:]),
			handle: binary.BigEndian.Uint64(h[4:]),
		}
		r.payload = c.readN(int(binary.BigEndian.Uint32(h[12:])))
		if r.typ&(1<<15) != 0 {
			r.errno = binary.BigEndian.Uint32(r.payload)
		}
		return r
	}
	c.t.Fatalf("bad reply magic %#x", m)
	return reply{}
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// isClosed reports whether the peer closed the connection (after
// whatever it still had to send) within 5 s.
func isClosed(nc net.Conn) bool {
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, nc)
	return err == nil || errors.Is(err, syscall.ECONNRESET)
}

func dialUnix(sock string) (net.Conn, error) { return net.Dial("unix", sock) }
