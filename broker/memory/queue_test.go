package memory

import "testing"

func TestFifoKeepsOrderAcrossBlocks(t *testing.T) {
	var q fifo
	next := uint64(0)
	want := uint64(0)
	for round := 0; round < 5; round++ {
		for i := 0; i < 3*blockSize+7; i++ {
			q.push(envelope{seq: next})
			next++
		}
		for i := 0; i < blockSize+3; i++ {
			if e := q.pop(); e.seq != want {
				t.Fatalf("pop = %d, want %d", e.seq, want)
			}
			want++
		}
	}
	// Taken-but-unhandled messages go back in front, in order.
	var back []envelope
	for i := 0; i < blockSize+5; i++ {
		back = append(back, q.pop())
	}
	q.pushFront(back)
	for q.len() > 0 {
		if e := q.pop(); e.seq != want {
			t.Fatalf("after pushFront: pop = %d, want %d", e.seq, want)
		}
		want++
	}
	if want != next {
		t.Fatalf("popped %d, pushed %d", want, next)
	}
	q.pushFront([]envelope{{seq: 1}, {seq: 2}})
	if q.pop().seq != 1 || q.pop().seq != 2 || q.len() != 0 {
		t.Fatal("pushFront on an empty queue")
	}
}
