package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"keel/internal/testbin"
)

func TestReadOnlyExportRefusesWrites(t *testing.T) {
	ctx := context.Background()
	mem := NewMemory(Info{Size: 1 << 20, ReadOnly: true})
	want := bytes.Repeat([]byte("keel"), 1024)
	if err := mem.WriteAt(ctx, want, 8192, false); err != nil {
		t.Fatal(err)
	}
	ts := mustServe(t, false, map[string]Backend{"ro": mem})
	for _, structured := range []bool{false, true} {
		c := dialRaw(t, ts.sock, "ro", structured)
		if c.flags&flagReadOnly == 0 || c.flags&(flagSendTrim|flagSendWriteZeroes|flagSendFUA) != 0 {
			t.Fatalf("read-only export flags %#x", c.flags)
		}
		c.send(cmdWrite, 0, 1, 0, 4096, make([]byte, 4096))
		c.send(cmdTrim, 0, 2, 0, 4096, nil)
		c.send(cmdWriteZeroes, 0, 3, 0, 4096, nil)
		for range 3 {
			if r := c.recv(0); r.errno != errPerm {
				t.Errorf("structured=%v: write-like request %d: errno %d, want EPERM", structured, r.handle, r.errno)
			}
		}
		// Reads still work and see the old data.
		c.send(cmdRead, 0, 4, 8192, uint32(len(want)), nil)
		r := c.recv(len(want))
		if structured {
			r.payload = r.payload[8:]
		}
		if r.errno != 0 || !bytes.Equal(r.payload, want) {
			t.Fatalf("read from read-only export: errno %d", r.errno)
		}
	}
	// A real client is refused too.
	src, _ := randomFile(t, 1<<20)
	if out, err := runErr(t, "nbdcopy", src, ts.uri("ro")); err == nil {
		t.Fatalf("nbdcopy wrote to a read-only export: %s", out)
	}
	got := make([]byte, len(want))
	if err := mem.ReadAt(ctx, got, 8192); err != nil || !bytes.Equal(got, want) {
		t.Fatal("read-only export was changed")
	}
}

// TestRequestErrors checks the error code of each refused request.
func TestRequestErrors(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{
		"disk": NewMemory(Info{Size: 1 << 20, MinBlock: 512, MaxBlock: 1 << 20}),
		"slow": slowZero{NewMemory(Info{Size: 1 << 20})},
	})
	c := dialRaw(t, ts.sock, "disk", true)
	cases := []struct {
		name   string
		typ    uint16
		flags  uint16
		off    uint64
		length uint32
		errno  uint32
	}{
		{"read past the end", cmdRead, 0, 1<<20 - 512, 1024, errInval},
		{"write past the end", cmdWrite, 0, 1 << 20, 512, errNoSpc},
		{"zero past the end", cmdWriteZeroes, 0, 1<<20 - 512, 1024, errNoSpc},
		{"offset overflow", cmdRead, 0, 1<<64 - 512, 1024, errInval},
		{"unaligned read", cmdRead, 0, 100, 512, errInval},
		{"unaligned length", cmdTrim, 0, 0, 100, errInval},
		{"zero length", cmdRead, 0, 0, 0, errInval},
		{"unknown command", 42, 0, 0, 512, errInval},
		{"unknown flag", cmdWrite, 1 << 9, 0, 512, errInval},
		{"no hole on trim", cmdTrim, cmdFlagNoHole, 0, 512, errInval},
		{"block status too long", cmdBlockStatus, 0, 512, 1 << 20, errInval},
	}
	for i, tc := range cases {
		var payload []byte
		if tc.typ == cmdWrite {
			payload = make([]byte, tc.length)
		}
		c.send(tc.typ, tc.flags, uint64(i), tc.off, tc.length, payload)
		r := c.recv(0)
		if r.handle != uint64(i) || r.errno != tc.errno || r.typ != replyTypeError || r.flags&replyFlagDone == 0 {
			t.Errorf("%s: reply %+v, want errno %d", tc.name, r, tc.errno)
		}
	}
	// A write larger than the maximum block size is refused, its payload
	// skipped, and the connection goes on.
	c.send(cmdWrite, 0, 100, 0, 2<<20, make([]byte, 2<<20))
	c.send(cmdFlush, 0, 101, 0, 0, nil)
	if r := c.recv(0); r.handle != 100 || r.errno != errInval {
		t.Errorf("oversized write: %+v", r)
	}
	if r := c.recv(0); r.handle != 101 || r.errno != 0 {
		t.Errorf("flush after oversized write: %+v", r)
	}

	// Fast zero: ENOTSUP from a backend that cannot, success otherwise.
	s := dialRaw(t, ts.sock, "slow", false)
	if s.flags&flagSendFastZero == 0 {
		t.Fatalf("flags %#x lack SEND_FAST_ZERO", s.flags)
	}
	s.send(cmdWriteZeroes, cmdFlagFastZero, 1, 0, 65536, nil)
	if r := s.recv(0); r.errno != errNotSup {
		t.Errorf("fast zero on slow backend: errno %d, want ENOTSUP", r.errno)
	}
	s.send(cmdWriteZeroes, 0, 2, 0, 65536, nil)
	if r := s.recv(0); r.errno != 0 {
		t.Errorf("zero on slow backend: errno %d", r.errno)
	}
	// Block status without a negotiated context.
	s.send(cmdBlockStatus, 0, 3, 0, 4096, nil)
	if r := s.recv(0); r.errno != errInval {
		t.Errorf("block status without context: errno %d, want EINVAL", r.errno)
	}
}

// slowZero is a backend whose zeroing is never fast.
type slowZero struct{ *Memory }

func (s slowZero) WriteZeroes(ctx context.Context, off, length int64, f ZeroFlags) error {
	if f.Fast {
		return ErrNotFast
	}
	return s.Memory.WriteZeroes(ctx, off, length, f)
}

// TestPipelinedRequests sends many requests before reading any reply and
// checks every reply against its request.
func TestPipelinedRequests(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{
		"disk":  NewMemory(Info{Size: 16 << 20}),
		"async": newAsyncMemory(Info{Size: 16 << 20}),
	})
	for _, export := range []string{"disk", "async"} {
		t.Run(export, func(t *testing.T) { testPipelinedRequests(t, ts, export) })
	}
}

func testPipelinedRequests(t *testing.T, ts *testServer, export string) {
	for _, structured := range []bool{false, true} {
		c := dialRaw(t, ts.sock, export, structured)
		const n = 200
		blocks := make([][]byte, n)
		var stream []byte
		for i := range n {
			blocks[i] = bytes.Repeat([]byte{byte(i + 1)}, 4096*(1+i%8))
			stream = appendRequest(stream, cmdWrite, 0, uint64(i), uint64(i)*65536, uint32(len(blocks[i])), blocks[i])
		}
		go c.nc.Write(stream)
		seen := map[uint64]bool{}
		for range n {
			r := c.recv(0)
			if r.errno != 0 || seen[r.handle] {
				t.Fatalf("write reply %+v", r)
			}
			seen[r.handle] = true
		}
		stream = stream[:0]
		for i := range n {
			stream = appendRequest(stream, cmdRead, 0, uint64(i), uint64(i)*65536, uint32(len(blocks[i])), nil)
		}
		// Also read a never-written range: structured replies send it
		// as a hole.
		stream = appendRequest(stream, cmdRead, 0, n, 15<<20, 8192, nil)
		go c.nc.Write(stream)
		// Simple replies to reads carry data whose length only the
		// request tells, so handles must be mapped to lengths.
		for range n + 1 {
			var r reply
			if structured {
				r = c.recv(0)
			} else {
				h := c.readN(16)
				r.errno, r.handle = binary.BigEndian.Uint32(h[4:]), binary.BigEndian.Uint64(h[8:])
				want := 8192
				if r.handle < n {
					want = len(blocks[r.handle])
				}
				r.payload = c.readN(want)
			}
			if r.errno != 0 || r.flags&replyFlagDone == 0 && structured {
				t.Fatalf("read reply %+v", r)
			}
			if r.handle == n {
				if structured && (r.typ != replyTypeOffsetHole || binary.BigEndian.Uint32(r.payload[8:]) != 8192) {
					t.Errorf("read of a hole: chunk type %d", r.typ)
				}
				continue
			}
			data := r.payload
			if structured {
				if r.typ != replyTypeOffsetData || binary.BigEndian.Uint64(data) != r.handle*65536 {
					t.Fatalf("read reply type %d", r.typ)
				}
				data = data[8:]
			}
			if !bytes.Equal(data, blocks[r.handle]) {
				t.Fatalf("read %d returned other data", r.handle)
			}
		}
		c.send(cmdDisc, 0, 0, 0, 0, nil)
		if !isClosed(c.nc) {
			t.Fatal("server kept the connection after NBD_CMD_DISC")
		}
	}
}

func TestBlockStatusReqOne(t *testing.T) {
	mem := NewMemory(Info{Size: 1 << 20})
	if err := mem.WriteAt(context.Background(), make([]byte, 1), 300<<10, false); err != nil {
		t.Fatal(err)
	}
	ts := mustServe(t, false, map[string]Backend{"disk": mem})
	c := dialRaw(t, ts.sock, "disk", true)
	for _, tc := range []struct {
		flags uint16
		want  []uint32 // length, flags pairs
	}{
		{0, []uint32{256 << 10, stateHole | stateZero, 64 << 10, 0, 704 << 10, stateHole | stateZero}},
		{cmdFlagReqOne, []uint32{256 << 10, stateHole | stateZero}},
	} {
		c.send(cmdBlockStatus, tc.flags, 7, 0, 1<<20, nil)
		r := c.recv(0)
		if r.typ != replyTypeBlockStatus || binary.BigEndian.Uint32(r.payload) != metaBaseAllocationID {
			t.Fatalf("block status reply %+v", r)
		}
		var got []uint32
		for p := r.payload[4:]; len(p) >= 4; p = p[4:] {
			got = append(got, binary.BigEndian.Uint32(p))
		}
		if len(got) != len(tc.want) {
			t.Fatalf("flags %#x: extents %v, want %v", tc.flags, got, tc.want)
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("flags %#x: extents %v, want %v", tc.flags, got, tc.want)
			}
		}
	}
}

func TestHandshakeOptions(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{"disk": NewMemory(Info{Size: 1 << 20})})
	c := dialRaw(t, ts.sock, "disk", false)
	c.nc.Close()

	for _, tc := range []struct {
		name string
		code uint32
		data []byte
		want uint32
	}{
		{"unknown option", 99, []byte("x"), repErrUnsup},
		{"starttls", optStartTLS, nil, repErrPolicy},
		{"meta before structured", optListMetaContext, nil, repErrInvalid},
		{"list with data", optList, []byte{1}, repErrInvalid},
		{"go truncated", optGo, []byte{0, 0, 0, 9, 'd'}, repErrInvalid},
		{"go unknown export", optGo, []byte{0, 0, 0, 1, 'x', 0, 0}, repErrUnknown},
		{"info", optInfo, []byte{0, 0, 0, 4, 'd', 'i', 's', 'k', 0, 1, 0, infoName}, repInfo},
		{"too big", optInfo, make([]byte, maxOptionPayload+1), repErrTooBig},
	} {
		c := &rawClient{t: t}
		nc, err := dialUnix(ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		c.nc = nc
		c.readN(18)
		c.write([]byte{0, 0, 0, flagFixedNewstyle})
		typ, _ := c.option(tc.code, tc.data)
		if typ != tc.want {
			t.Errorf("%s: reply %#x, want %#x", tc.name, typ, tc.want)
		}
		nc.Close()
	}

	// NBD_OPT_EXPORT_NAME with zeroes, old-style ending of haggling.
	nc, err := dialUnix(ts.sock)
	if err != nil {
		t.Fatal(err)
	}
	c = &rawClient{t: t, nc: nc}
	c.readN(18)
	c.write([]byte{0, 0, 0, flagFixedNewstyle})
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, optExportName)
	b = binary.BigEndian.AppendUint32(b, 0) // default export
	c.write(b)
	h := c.readN(8 + 2 + 124)
	if binary.BigEndian.Uint64(h) != 1<<20 || !bytes.Equal(h[10:], make([]byte, 124)) {
		t.Fatalf("export name reply % x", h[:10])
	}
	c.send(cmdFlush, 0, 5, 0, 0, nil)
	if r := c.recv(0); r.handle != 5 || r.errno != 0 {
		t.Fatalf("flush after EXPORT_NAME: %+v", r)
	}
	nc.Close()
}

// TestDisconnectAfterHandshake: clients that leave right after GO, or in
// the middle of a request, leave no connection behind.
func TestDisconnectAfterHandshake(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{"disk": NewMemory(Info{Size: 1 << 20})})
	e, _ := ts.Export("disk")
	for range 20 {
		c := dialRaw(t, ts.sock, "disk", true)
		c.nc.Close()
	}
	c := dialRaw(t, ts.sock, "disk", true)
	c.write(appendRequest(nil, cmdWrite, 0, 1, 0, 4096, make([]byte, 100)))
	c.nc.Close()
	waitFor(t, "connections to close", func() bool { return e.Conns() == 0 })
	run(t, "nbdinfo", ts.uri("disk"))
}

func TestFailedExportAnswersEIO(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{"disk": NewMemory(Info{Size: 1 << 20})})
	e, _ := ts.Export("disk")
	c := dialRaw(t, ts.sock, "disk", false)
	c.send(cmdWrite, 0, 1, 0, 4096, make([]byte, 4096))
	if r := c.recv(0); r.errno != 0 {
		t.Fatalf("write before fencing: errno %d", r.errno)
	}
	e.Fail(ErrVolumeLost)
	c.send(cmdWrite, 0, 2, 0, 4096, make([]byte, 4096))
	c.send(cmdRead, 0, 3, 0, 4096, nil)
	c.send(cmdFlush, 0, 4, 0, 0, nil)
	for range 3 {
		if r := c.recv(0); r.errno != errIO {
			t.Fatalf("request %d after fencing: errno %d, want EIO", r.handle, r.errno)
		}
	}
	if e.Conns() != 1 {
		t.Fatalf("fenced export: %d connections, want the client's 1", e.Conns())
	}
	// A new client cannot open it.
	if out, err := runErr(t, "nbdinfo", ts.uri("disk")); err == nil {
		t.Fatalf("nbdinfo opened a fenced export: %s", out)
	}
	// Detaching refuses while the client holds it, unless forced; forced,
	// the client is disconnected.
	ctx := context.Background()
	if err := ts.RemoveExport(ctx, "disk", false); !errors.Is(err, ErrExportBusy) {
		t.Fatalf("remove busy export: %v, want ErrExportBusy", err)
	}
	if err := ts.RemoveExport(ctx, "disk", true); err != nil {
		t.Fatal(err)
	}
	if !isClosed(c.nc) {
		t.Fatal("forced removal left the connection open")
	}
	if err := ts.RemoveExport(ctx, "disk", true); !errors.Is(err, ErrNoExport) {
		t.Fatalf("remove twice: %v", err)
	}
}

func TestShutdownAnswersESHUTDOWN(t *testing.T) {
	ts := mustServe(t, false, map[string]Backend{"disk": NewMemory(Info{Size: 1 << 20})})
	e, _ := ts.Export("disk")
	c := dialRaw(t, ts.sock, "disk", true)
	e.Fail(ErrShutdown)
	// The server stops reading; a request already on the way may be
	// answered with ESHUTDOWN or not read at all, and then the
	// connection closes.
	c.nc.Write(appendRequest(nil, cmdRead, 0, 1, 0, 4096, nil))
	buf := make([]byte, 64)
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _ := c.nc.Read(buf)
	if n > 0 {
		r := buf[:n]
		if binary.BigEndian.Uint32(r) != magicStructReply || binary.BigEndian.Uint32(r[20:]) != errShutdown {
			t.Fatalf("reply after shutdown: % x", r)
		}
	}
	if !isClosed(c.nc) {
		t.Fatal("connection open after export shutdown")
	}
	waitFor(t, "connection count to drop", func() bool { return e.Conns() == 0 })
	if err := ts.RemoveExport(context.Background(), "disk", false); err != nil {
		t.Fatal(err)
	}
}

// TestFencingFailsFio: a real client writing to an export that is closed
// under it (the volume is lost) fails with an I/O error.
func TestFencingFailsFio(t *testing.T) {
	fio := testbin.NeedTool(t, "fio")
	ts := mustServe(t, false, map[string]Backend{"disk": NewMemory(Info{Size: 64 << 20})})
	e, _ := ts.Export("disk")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fio, "--name=fenced", "--ioengine=nbd", "--uri="+ts.uri("disk"),
		"--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=64M", "--time_based", "--runtime=30")
	cmd.Dir = t.TempDir()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "fio to connect", func() bool { return e.Conns() > 0 })
	time.Sleep(300 * time.Millisecond)
	e.Fail(ErrVolumeLost)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("fio succeeded on a fenced export:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "Input/output error") {
		t.Fatalf("fio failed without an I/O error: %v\n%s", err, out.String())
	}
	if ctx.Err() != nil {
		t.Fatal("fio hung on a fenced export")
	}
}
