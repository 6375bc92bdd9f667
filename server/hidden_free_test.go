package server

import (
	"bytes"
	"testing"
	"time"
)

// hookDevice lets a test hold a flush in its sync or a read at one
// offset.
type hookDevice struct {
	*crashDevice
	onSync func()
	onRead func(off int64)
}

func (d *hookDevice) Sync() error {
	if f := d.onSync; f != nil {
		d.onSync = nil
		f()
	}
	return d.crashDevice.Sync()
}

func (d *hookDevice) ReadAt(b []byte, off int64) (int, error) {
	if f := d.onRead; f != nil {
		f(off)
	}
	return d.crashDevice.ReadAt(b, off)
}

// A flush frees a hidden parent whose last child went while a scrub
// repair of that parent is between its lookup and its device write: the
// freeing waits for the repair, so the AU it hands to a live object's
// write is not overwritten by the repair afterwards.
func TestHiddenParentFreedAfterItsRepair(t *testing.T) {
	dev := &hookDevice{crashDevice: newCrashDevice(mustFormat(t, crashObjectSize, 8))}
	st, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	parent, child, live := ObjectID{7, 0}, ObjectID{8, 0}, ObjectID{9, 0}
	for _, id := range []ObjectID{parent, live} {
		if err := st.CreateObject(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.CreateObject(child, &parent); err != nil {
		t.Fatal(err)
	}
	pdata := bytes.Repeat([]byte{0x11}, BlockSize)
	if err := st.Write(parent, 0, pdata, 5); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteObject(parent); err != nil { // hidden: the child reads through it
		t.Fatal(err)
	}
	st.mu.Lock()
	p, _ := st.find(parent, true)
	au, pinc, linc := p.aus[0], p.inc, st.objects[live].inc
	st.mu.Unlock()
	if st.stripeOf(pinc, 0) == st.stripeOf(linc, 0) {
		t.Fatal("test setup: the parent and the live object share a stripe")
	}
	dev.crashDevice.mu.Lock()
	dev.crashDevice.cur[st.dataOff(au, 0)] ^= 0xff // rot
	dev.crashDevice.mu.Unlock()

	// The child is deleted; its flush holds in its sync, the parent
	// pending.
	syncHeld, syncGo := make(chan struct{}), make(chan struct{})
	dev.onSync = func() { close(syncHeld); <-syncGo }
	delDone := make(chan error, 1)
	go func() { delDone <- st.DeleteObject(child) }()
	<-syncHeld
	// A repair of the hidden parent holds in its device read.
	readHeld, readGo := make(chan struct{}), make(chan struct{})
	target := st.dataOff(au, 0)
	dev.onRead = func(off int64) {
		if off == target {
			dev.onRead = nil
			close(readHeld)
			<-readGo
		}
	}
	repDone := make(chan error, 1)
	go func() {
		_, err := st.repairBlock(parent, true, 0, BlockCopy{State: BlockData, Version: 5, Data: pdata})
		repDone <- err
	}()
	<-readHeld
	// The flush goes on: it must not free the parent under the repair.
	close(syncGo)
	time.Sleep(50 * time.Millisecond)
	st.mu.Lock()
	freed := st.byInc[pinc] == nil
	st.mu.Unlock()
	if freed {
		t.Fatal("the flush freed a hidden parent while its repair was under way")
	}
	close(readGo)
	if err := <-repDone; err != nil {
		t.Fatal(err)
	}
	if err := <-delDone; err != nil {
		t.Fatal(err)
	}
	// Now the AU is free; a live write takes it, and keeps its data.
	ldata := bytes.Repeat([]byte{0x22}, BlockSize)
	if err := st.Write(live, 0, ldata, 9); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, BlockSize)
	if err := st.Read(live, 0, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ldata) {
		t.Fatalf("the live object reads %#x..., not its write", got[0])
	}
	st.mu.Lock()
	freed = st.byInc[pinc] == nil
	st.mu.Unlock()
	if !freed {
		t.Fatal("the hidden parent was never freed")
	}
}
