package later

import (
	"io"
	"slices"
	"strings"
	"testing"
)

func TestRunInOrderWithWorkAddedMeanwhile(t *testing.T) {
	var q Queue
	var got []int
	q.Add(func() { got = append(got, 1); q.Add(func() { got = append(got, 3) }) })
	q.Add(func() { got = append(got, 2) })
	q.Run()
	q.Run()
	if !slices.Equal(got, []int{1, 2, 3}) {
		t.Fatalf("ran %v, want [1 2 3] once each", got)
	}
	var nilq *Queue
	nilq.Add(func() { got = append(got, 4) })
	if len(got) != 4 {
		t.Fatal("Add on a nil queue did not run at once")
	}
}

func TestReaderRunsTheQueueBeforeEachRead(t *testing.T) {
	var q Queue
	ran := 0
	r := Reader{R: strings.NewReader("ab"), Before: q.Run}
	buf := make([]byte, 1)
	for i := range 3 {
		q.Add(func() { ran++ })
		n, err := r.Read(buf)
		if ran != i+1 {
			t.Fatalf("read %d: the queue ran %d times, want %d", i, ran, i+1)
		}
		if i < 2 && (n != 1 || err != nil) || i == 2 && err != io.EOF {
			t.Fatalf("read %d: %d, %v", i, n, err)
		}
	}
}
