package retryqueue

import (
	"errors"
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
		{Part: 7, Due: base.Add(3 * time.Second), ID: "c", Data: []byte("third")},
		{Part: 7, Due: base.Add(1 * time.Second), ID: "a", Data: []byte("first")},
		{Part: 7, Due: base.Add(2 * time.Second), ID: "b2", Data: []byte("second-b2")},
		{Part: 7, Due: base.Add(2 * time.Second), ID: "b1", Data: []byte("second-b1")},
	} {
		if err := q.Put(e); err != nil {
			t.Fatal(err)
		}
	}
	if q.Len() != 4 {
		t.Fatalf("Len = %d, want 4", q.Len())
	}
	if parts := q.DueParts(base); len(parts) != 0 {
		t.Fatalf("DueParts(base) = %v, want none", parts)
	}
	if next := q.Next(nil); !next.Equal(base.Add(time.Second)) {
		t.Fatalf("Next = %v, want +1s", next)
	}
	got, err := q.Due(7, base, 10)
	if err != nil || len(got) != 0 {
		t.Fatalf("Due(base) = %d entries, %v; want none", len(got), err)
	}
	if parts := q.DueParts(base.Add(2 * time.Second)); len(parts) != 1 || parts[0] != 7 {
		t.Fatalf("DueParts(+2s) = %v, want [7]", parts)
	}
	got, err = q.Due(7, base.Add(2*time.Second), 10)
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
	if err := q.Delete(7, got); err != nil {
		t.Fatal(err)
	}
	if q.Len() != 1 || q.PartLen(7) != 1 {
		t.Fatalf("Len after delete = %d (partition %d), want 1", q.Len(), q.PartLen(7))
	}
	if next := q.Next(nil); !next.Equal(base.Add(3 * time.Second)) {
		t.Errorf("Next = %v, want +3s", next)
	}
	// max bounds a read; the rest comes next time.
	got, err = q.Due(7, base.Add(time.Hour), 1)
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
		if err := q.Put(Entry{Part: uint64(i % 3), Due: base.Add(time.Duration(i) * time.Millisecond), ID: fmt.Sprint(i), Data: []byte(fmt.Sprint("data-", i))}); err != nil {
			t.Fatal(err)
		}
	}
	// Take the first 50 (from each partition its share).
	for pk := range uint64(3) {
		got, err := q.Due(pk, base.Add(49*time.Millisecond), 1000)
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Delete(pk, got); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := q.Put(Entry{Part: 1, Due: base, ID: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put on a closed queue = %v, want ErrClosed", err)
	}
	q = open(t, dir)
	if q.Len() != 50 {
		t.Fatalf("Len after reopen = %d, want 50", q.Len())
	}
	if parts := q.DueParts(base.Add(time.Hour)); len(parts) != 3 {
		t.Fatalf("DueParts after reopen = %v, want 3 partitions", parts)
	}
	for pk := range uint64(3) {
		got, err := q.Due(pk, base.Add(time.Hour), 1000)
		if err != nil {
			t.Fatal(err)
		}
		i := 50
		for i%3 != int(pk) {
			i++
		}
		for _, e := range got {
			if want := fmt.Sprint("data-", i); string(e.Data) != want || e.ID != fmt.Sprint(i) {
				t.Errorf("partition %d: entry %s %q, want %d %q", pk, e.ID, e.Data, i, want)
			}
			i += 3
		}
		if i < 100 {
			t.Errorf("partition %d: entries from 50 on ended before %d", pk, i)
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
				if err := q.Put(Entry{Part: uint64(r.IntN(3)), Due: due, ID: id, Data: []byte("data-" + id)}); err != nil {
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
		for _, pk := range q.DueParts(at) {
			got, err := q.Due(pk, at, 64)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range got {
				if string(e.Data) != "data-"+e.ID || e.Part != pk {
					t.Fatalf("entry %s of partition %d carries %q", e.ID, e.Part, e.Data)
				}
				seen[e.ID]++
			}
			if err := q.Delete(pk, got); err != nil {
				t.Fatal(err)
			}
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
	for pk := range uint64(3) {
		q.mu.Lock()
		if p := q.parts[pk]; p != nil {
			p.low = time.Time{}
		}
		q.mu.Unlock()
		rest, err := q.Due(pk, base.Add(48*time.Hour), 1<<20)
		if err != nil || len(rest) != 0 {
			t.Fatalf("partition %d: %d entries left in the queue (%v)", pk, len(rest), err)
		}
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
	if err := q.Put(Entry{Part: 1, Due: time.Now().Add(time.Second), ID: "x"}); err != nil {
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
	defer func() {
		if err := q.Close(); err != nil {
			b.Error(err)
		}
	}()
	data := make([]byte, 700)
	base := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			i++
			if err := q.Put(Entry{Part: uint64(i % 4), Due: base.Add(time.Duration(rand.IntN(1e9))), ID: fmt.Sprint(i), Data: data}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestAnEmptiedQueueGivesItsDiskBack: once a backlog drained, the queue is
// compacted, so the disk it took is given back although nothing more is
// written (the deletions alone would stay as tombstones).
//
// A queue emptied again soon after (within compactEvery) is compacted
// too, once the interval is over: the second backlog's disk is not kept
// until a third.
func TestAnEmptiedQueueGivesItsDiskBack(t *testing.T) {
	q := open(t, t.TempDir())
	for round := range 2 {
		t.Run(fmt.Sprint("backlog ", round+1), func(t *testing.T) { fillAndDrain(t, q, round) })
	}
}

func fillAndDrain(t *testing.T, q *Queue, round int) {
	base := time.Unix(1_800_000_000, 0)
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i*7 + i/13 + round)
	}
	for b := range 300 {
		batch := make([]Entry, 100)
		for i := range batch {
			batch[i] = Entry{Part: uint64(b % 5), Due: base.Add(time.Duration(b*100+i) * time.Millisecond), ID: fmt.Sprint(round, "-", b, "-", i), Data: data}
		}
		if err := q.Put(batch...); err != nil {
			t.Fatal(err)
		}
	}
	tables := func() (n int64) {
		m := q.db.Metrics()
		for _, l := range &m.Levels {
			n += l.TablesSize
		}
		return n
	}
	full, _ := q.Metrics()
	fullTables := tables()
	for q.Len() > 0 {
		for _, pk := range q.DueParts(base.Add(time.Hour)) {
			got, err := q.Due(pk, base.Add(time.Hour), 1000)
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Delete(pk, got); err != nil {
				t.Fatal(err)
			}
		}
	}
	// What stays is the write-ahead log kept for reuse (bounded by the
	// memtables' size), not the entries.
	deadline := time.Now().Add(30 * time.Second)
	for {
		disk, _ := q.Metrics()
		if n := tables(); n < fullTables/100 && !q.compacting.Load() {
			t.Logf("disk %d bytes (tables %d) with 30,000 entries; once emptied %d (tables %d)", full, fullTables, disk, n)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tables hold %d bytes 30s after the queue emptied (%d with 30,000 entries)", tables(), fullTables)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
