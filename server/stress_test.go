package server

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

// Concurrent writers, readers, trims and flushes on overlapping blocks:
// without a crash no read may ever see a checksum error, and every block
// reads one of the contents written to it.
func TestConcurrentIOHasNoChecksumErrors(t *testing.T) {
	dev := newCrashDevice(mustFormat(t, crashObjectSize, 4))
	s, err := Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	ids := []ObjectID{{1, 0}, {1, 1}}
	for _, id := range ids {
		if err := s.CreateObject(id, nil); err != nil {
			t.Fatal(err)
		}
	}
	const hot = 64 // blocks shared by every goroutine, across an AU boundary
	base := BlocksPerAU - hot/2
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 3))
			buf := make([]byte, 4*BlockSize)
			for i := 0; i < 300; i++ {
				id := ids[rng.IntN(len(ids))]
				blk := base + rng.IntN(hot-4)
				n := 1 + rng.IntN(4)
				var err error
				switch rng.IntN(8) {
				case 0:
					err = s.WriteZeroes(id, uint64(blk)*BlockSize, n*BlockSize, 0)
				case 1:
					err = s.Flush()
				case 2, 3, 4:
					for k := 0; k < n; k++ {
						pattern(uint64(g)<<32|uint64(i*4+k+1), buf[k*BlockSize:(k+1)*BlockSize])
					}
					err = s.Write(id, uint64(blk)*BlockSize, buf[:n*BlockSize], 0)
				default:
					err = s.Read(id, uint64(blk)*BlockSize, buf[:n*BlockSize])
					for k := 0; err == nil && k < n; k++ {
						if _, ok := contentID(buf[k*BlockSize : (k+1)*BlockSize]); !ok {
							err = errors.New("read returned a mix of two writes")
						}
					}
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s)
	s2, err := Open(newCrashDevice(dev.durable))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, s2)
	one := make([]byte, BlockSize)
	for _, id := range ids {
		for b := base; b < base+hot; b++ {
			if err := s2.Read(id, uint64(b)*BlockSize, one); err != nil {
				t.Fatalf("after reopen: %v", err)
			}
		}
	}
}
