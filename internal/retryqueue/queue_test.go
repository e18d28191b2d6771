package retryqueue

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, dir string) *Queue {
	t.Helper()
	q, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func TestDueInOrderAndOnlyWhenDue(t *testing.T) {
	q := open(t, t.TempDir())
	base := time.Unix(1_800_000_000, 0)
	// Put out of order, two at the same time.
	for _, e := range []Entry{
		{Due: base.Add(3 * time.Second), ID: "c", Data: []byte("third")},
		{Due: base.Add(1 * time.Second), ID: "a", Data: []byte("first")},
		{Due: base.Add(2 * time.Second), ID: "b2", Data: []byte("second-b2")},
		{Due: base.Add(2 * time.Second), ID: "b1", Data: []byte("second-b1")},
	} {
		if err := q.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	if q.Len() != 4 {
		t.Fatalf("Len = %d, want 4", q.Len())
	}
	got, next, err := q.Due(base, 10)
	if err != nil || len(got) != 0 || !next.Equal(base.Add(time.Second)) {
		t.Fatalf("Due(base) = %d entries, next %v, %v; want none, next at +1s", len(got), next, err)
	}
	got, next, err = q.Due(base.Add(2*time.Second), 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a/first", "b1/second-b1", "b2/second-b2"}
	if len(got) != len(want) {
		t.Fatalf("Due(+2s) = %d entries, want %d", len(got), len(want))
	}
	for i, e := range got {
		if s := e.ID + "/" + string(e.Data); s != want[i] {
			t.Errorf("entry %d = %s, want %s", i, s, want[i])
		}
	}
	if !next.Equal(base.Add(3 * time.Second)) {
		t.Errorf("next = %v, want +3s", next)
	}
	if err := q.Delete(got); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 1 {
		t.Fatalf("Len after delete = %d, want 1", q.Len())
	}
	// max bounds a read; the rest comes next time.
	got, _, err = q.Due(base.Add(time.Hour), 1)
	if err != nil || len(got) != 1 || string(got[0].Data) != "third" {
		t.Fatalf("Due(+1h, 1) = %v, %v", got, err)
	}
}

func TestEntriesSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	q, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0)
	for i := range 100 {
		if err := q.Put(Entry{Due: base.Add(time.Duration(i) * time.Millisecond), ID: fmt.Sprint(i), Data: []byte(fmt.Sprint("data-", i))}); err != nil {
			t.Fatal(err)
		}
	}
	got, _, err := q.Due(base.Add(49*time.Millisecond), 1000)
	if err != nil || len(got) != 50 {
		t.Fatalf("Due = %d, %v; want 50", len(got), err)
	}
	if err := q.Delete(got); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Put(Entry{Due: base, ID: "x"}); err != ErrClosed {
		t.Fatalf("Put on a closed queue = %v, want ErrClosed", err)
	}
	q = open(t, dir)
	if q.Len() != 50 {
		t.Fatalf("Len after reopen = %d, want 50", q.Len())
	}
	got, _, err = q.Due(base.Add(time.Hour), 1000)
	if err != nil || len(got) != 50 {
		t.Fatalf("Due after reopen = %d, %v; want 50", len(got), err)
	}
	for i, e := range got {
		if want := fmt.Sprint("data-", i+50); string(e.Data) != want || e.ID != fmt.Sprint(i+50) {
			t.Errorf("entry %d = %s %q, want %d %q", i, e.ID, e.Data, i+50, want)
		}
	}
}

// TestConcurrentPutsAreNeverSkipped puts entries from several goroutines,
// many of them due before what the reader has already handed out (a retry
// scheduled while the reader works), and checks that every entry comes out
// exactly once with its own data.
func TestConcurrentPutsAreNeverSkipped(t *testing.T) {
	q := open(t, t.TempDir())
	base := time.Unix(1_800_000_000, 0)
	var clock sync.Mutex
	now := base
	tick := func() time.Time {
		clock.Lock()
		defer clock.Unlock()
		now = now.Add(time.Millisecond)
		return now
	}
	const writers, each = 4, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range each {
				at := tick()
				// Due from 50 ms in the past to 50 ms ahead of the clock.
				due := at.Add(time.Duration(r.IntN(100)-50) * time.Millisecond)
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := q.Put(Entry{Due: due, ID: id, Data: []byte("data-" + id)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	seen := map[string]int{}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	read := func() {
		clock.Lock()
		at := now
		clock.Unlock()
		got, _, err := q.Due(at, 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range got {
			if string(e.Data) != "data-"+e.ID {
				t.Fatalf("entry %s carries %q", e.ID, e.Data)
			}
			seen[e.ID]++
		}
		if err := q.Delete(got); err != nil {
			t.Fatal(err)
		}
	}
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
			read()
		}
	}
	clock.Lock()
	now = now.Add(time.Hour)
	clock.Unlock()
	for q.Len() > 0 {
		before := q.Len()
		read()
		if q.Len() == before {
			t.Fatalf("%d entries held but none due an hour after the last put", before)
		}
	}
	if len(seen) != writers*each {
		t.Errorf("%d distinct entries handed out, want %d", len(seen), writers*each)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("entry %s handed out %d times", id, n)
		}
	}
	// And nothing is left behind the read position.
	rest, _, err := func() ([]Entry, time.Time, error) {
		q.mu.Lock()
		q.low = time.Time{}
		q.mu.Unlock()
		return q.Due(base.Add(48*time.Hour), 1<<20)
	}()
	if err != nil || len(rest) != 0 {
		t.Fatalf("%d entries left in the queue (%v)", len(rest), err)
	}
}

func TestWaitWakesForAnEarlierPut(t *testing.T) {
	q := open(t, t.TempDir())
	stop := make(chan struct{})
	woke := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		q.Wait(stop, time.Time{}, time.Now(), time.Minute)
		woke <- time.Since(start)
	}()
	// Until Wait is waiting, a Put does not signal.
	for {
		q.mu.Lock()
		waiting := !q.wakeWhen.IsZero()
		q.mu.Unlock()
		if waiting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := q.Put(Entry{Due: time.Now().Add(time.Second), ID: "x"}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-woke:
		if d > 30*time.Second {
			t.Fatalf("Wait returned after %v", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return after a Put due before its deadline")
	}
	// Stop ends a wait.
	go func() { q.Wait(stop, time.Time{}, time.Now(), time.Hour); woke <- 0 }()
	close(stop)
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return when stopped")
	}
}

func BenchmarkPut(b *testing.B) {
	q, err := Open(Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	data := make([]byte, 700)
	base := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := q.Put(Entry{Due: base.Add(time.Duration(rand.IntN(1e9))), ID: fmt.Sprint(i), Data: data}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
