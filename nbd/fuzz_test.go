package nbd

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// fuzzServer is a server with one small export, logging nowhere.
func fuzzServer(t testing.TB) (*Server, *Export) {
	s := NewServer(slog.New(slog.DiscardHandler))
	e, err := s.AddExport("disk", NewMemory(Info{Size: 1 << 20, MaxBlock: 1 << 20}))
	if err != nil {
		t.Fatal(err)
	}
	return s, e
}

// pipeConn runs serve on one end of a unix socket pair, writes input to
// the other, half-closes it, and returns everything the server wrote.
func pipeConn(t *testing.T, s *Server, input []byte, serve func(*conn)) []byte {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ends := make([]*net.UnixConn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		nc, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		ends[i] = nc.(*net.UnixConn)
	}
	client, server := ends[0], ends[1]
	defer client.Close()
	c := newConn(s, server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		serve(c)
	}()
	go func() {
		client.Write(input)
		// The client has said all it will.
		client.CloseWrite()
	}()
	out, _ := io.ReadAll(client)
	<-done
	return out
}

// option frames one option request.
func fuzzOption(code uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// FuzzHandshake feeds arbitrary client bytes to the option parser and the
// whole handshake: it must never panic or hang, and whatever it writes
// must be the greeting followed by well-formed option replies.
func FuzzHandshake(f *testing.F) {
	flags := []byte{0, 0, 0, flagFixedNewstyle | flagNoZeroes}
	seed := func(parts ...[]byte) []byte {
		b := append([]byte(nil), flags...)
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	goData := []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 2, 0, infoBlockSize, 0, infoName}
	meta := []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 0, 0, 1, 0, 0, 0, 15}
	meta = append(meta, metaBaseAllocation...)
	f.Add(seed(fuzzOption(optStructuredReply, nil), fuzzOption(optSetMetaContext, meta), fuzzOption(optGo, goData)))
	f.Add(seed(fuzzOption(optList, nil), fuzzOption(optInfo, goData), fuzzOption(optAbort, nil)))
	f.Add(seed(fuzzOption(optListMetaContext, meta), fuzzOption(optExportName, []byte("disk"))))
	f.Add(seed(fuzzOption(optStructuredReply, nil), fuzzOption(optListMetaContext, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})))
	f.Add(seed(fuzzOption(optStartTLS, nil), fuzzOption(77, []byte("x"))))
	f.Add([]byte{0, 0, 0, 4})
	s, _ := fuzzServer(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		out := pipeConn(t, s, input, func(c *conn) {
			if e, err := c.negotiate(); err == nil && e != nil {
				// Entered transmission: the export's size and
				// flags were sent; nothing more to check here.
				return
			}
		})
		if len(out) < 18 || binary.BigEndian.Uint64(out) != magicInit {
			t.Fatalf("no greeting: % x", out)
		}
		for p := out[18:]; len(p) > 0; {
			if len(p) < 20 || binary.BigEndian.Uint64(p) != magicOptReply {
				// EXPORT_NAME ends haggling with size and flags.
				if len(p) == 10 || len(p) == 134 {
					return
				}
				t.Fatalf("malformed option reply stream: % x", p)
			}
			n := int(binary.BigEndian.Uint32(p[16:]))
			if len(p) < 20+n {
				t.Fatalf("truncated option reply: % x", p)
			}
			p = p[20+n:]
		}
	})
}

// FuzzRequests feeds arbitrary bytes to the transmission phase (request
// parser, checks and the memory backend) with structured replies, so that
// the output can be checked to be well-formed replies without context.
func FuzzRequests(f *testing.F) {
	var seed []byte
	seed = appendRequest(seed, cmdWrite, cmdFlagFUA, 1, 4096, 8, []byte("abcdefgh"))
	seed = appendRequest(seed, cmdRead, cmdFlagDF, 2, 4000, 200, nil)
	seed = appendRequest(seed, cmdBlockStatus, cmdFlagReqOne, 3, 0, 1<<20, nil)
	seed = appendRequest(seed, cmdWriteZeroes, cmdFlagNoHole|cmdFlagFastZero, 4, 0, 65536, nil)
	seed = appendRequest(seed, cmdTrim, 0, 5, 65536, 1<<19, nil)
	seed = appendRequest(seed, cmdFlush, 0, 6, 0, 0, nil)
	seed = appendRequest(seed, cmdCache, 0, 7, 0, 4096, nil)
	f.Add(seed)
	f.Add(appendRequest(nil, cmdWrite, 0, 1, 1<<20-1, 2<<20, nil))
	f.Add(appendRequest(nil, cmdRead, 0, 1, 1<<63, 1<<31, nil))
	f.Add(appendRequest(nil, cmdDisc, 0, 1, 0, 0, nil))
	s, e := fuzzServer(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		out := pipeConn(t, s, input, func(c *conn) {
			c.structured, c.metaAlloc, c.metaExport = true, true, e
			c.run(e)
		})
		for p := out; len(p) > 0; {
			switch {
			case len(p) >= 16 && binary.BigEndian.Uint32(p) == magicSimpleReply:
				p = p[16:]
			case len(p) >= 20 && binary.BigEndian.Uint32(p) == magicStructReply:
				n := int(binary.BigEndian.Uint32(p[16:]))
				if len(p) < 20+n || binary.BigEndian.Uint16(p[4:])&replyFlagDone == 0 {
					t.Fatalf("bad structured reply % x", p[:20])
				}
				p = p[20+n:]
			default:
				t.Fatalf("malformed reply stream: % x", p[:min(len(p), 32)])
			}
		}
	})
}
