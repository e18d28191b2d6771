package deliverylog

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/store"
)

// run keeps r's index up to date until the returned stop is called.
func run(r *Reader) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = r.Start(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func ids(ds []*Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Object.Spec.EventID
		if n := len(d.Object.Status.Attempts); n > 0 {
			out[i] += fmt.Sprintf("+%d", n)
		}
	}
	return out
}

// TestTheIndexCatchesUpAfterARestart: records written while no reader
// indexed the log (a manager stopped, another replica writing) are found
// after the reader starts again on the same index, which goes on from
// where it was instead of reading the log from its start.
func TestTheIndexCatchesUpAfterARestart(t *testing.T) {
	s := openStore(t, 0)
	dir := t.TempDir()
	ctx := context.Background()
	r, err := Open(s.JetStream(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(r)
	write(t, s, "ns", "crm", stored("u1", "e1", `{}`))
	last := write(t, s, "ns", "crm", stored("u1", "e2", `{}`))
	ds, _, err := r.Scan(ctx, "ns", "crm", last)
	if err != nil || fmt.Sprint(ids(ds)) != "[e2 e1]" {
		t.Fatalf("before the restart: %v, %v", ids(ds), err)
	}
	stop()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// Written while nothing indexed: a new delivery, an attempt of an old
	// one, another WebhookConfig's.
	write(t, s, "ns", "crm", stored("u1", "e3", `{}`))
	write(t, s, "ns", "crm", attempt("u1", "e1", 1, webhooksv1alpha1.ResultSucceeded, 200, time.Time{}))
	last = write(t, s, "ns", "erp", stored("u2", "e4", `{}`))

	r, err = Open(s.JetStream(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	if got, _ := r.idx.indexed(); got != 2 {
		t.Fatalf("the index reopened at sequence %d, want 2, where it was", got)
	}
	defer run(r)()
	_, bound, err := r.Bounds(ctx)
	if err != nil || bound != last {
		t.Fatalf("bounds: last %d, %v; want %d", bound, err, last)
	}
	ds, _, err = r.Scan(ctx, "ns", "", last)
	if err != nil || fmt.Sprint(ids(ds)) != "[e4 e3 e2 e1+1]" {
		t.Fatalf("after the restart: %v, %v; want [e4 e3 e2 e1+1]", ids(ds), err)
	}
	d, err := r.Get(ctx, "ns", "crm", "e1", last)
	if err != nil || d == nil || len(d.Object.Status.Attempts) != 1 || d.FirstSeq != 1 {
		t.Fatalf("get e1: %+v, %v", d, err)
	}
}

// TestAgedOutRecordsAreSkippedAndPruned: records that left the stream
// (its record cap here) are skipped by reads before the index prunes
// them; pruning forgets the deliveries with no record left, and keeps one
// whose later records are still there until those go too.
func TestAgedOutRecordsAreSkippedAndPruned(t *testing.T) {
	s, err := store.Open(context.Background(), store.Options{
		DataDir: t.TempDir(), MaxBytes: -1, DeliveryLogRetention: time.Hour, DeliveryLogMaxRecords: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	// Pruned only when the test says so.
	r := newReaderIn(t, s, Options{Dir: t.TempDir(), PruneInterval: time.Hour})
	ctx := context.Background()
	// Sequences 1 to 10: e0 to e9; 11: e0's attempt, which pushes e0's
	// Stored record (sequence 1) out of the log.
	for i := range 10 {
		write(t, s, "ns", "crm", stored("u1", fmt.Sprintf("e%d", i), `{}`))
	}
	// Indexed before it goes (a record that ages out before the index
	// read it is not indexed at all).
	if _, last, err := r.Bounds(ctx); err != nil || last != 10 {
		t.Fatalf("bounds: last %d, %v", last, err)
	}
	last := write(t, s, "ns", "crm", attempt("u1", "e0", 1, webhooksv1alpha1.ResultFailed, 500, time.Time{}))
	first, _, err := r.Bounds(ctx)
	if err != nil || first != 2 {
		t.Fatalf("the log starts at %d (%v), want 2", first, err)
	}
	page := func(want string) {
		t.Helper()
		first, last, err := r.Bounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ds, _, err := r.Page(ctx, Query{Namespace: "ns", Webhook: "crm", First: first, UpTo: last})
		if err != nil || fmt.Sprint(ids(ds)) != want {
			t.Fatalf("page: %v, %v; want %s", ids(ds), err, want)
		}
	}
	// e0 keeps its place (its first record's) with what is left of it.
	page("[e9 e8 e7 e6 e5 e4 e3 e2 e1 e0+1]")
	if n, err := r.idx.prune(first); err != nil || n != 0 {
		t.Fatalf("pruned %d (%v), want none: e0 still has a record", n, err)
	}
	if seqs, _ := r.idx.seqsOf("ns", "crm", "e0"); len(seqs) != 2 {
		t.Fatalf("e0's sequences after a prune: %v", seqs)
	}

	// Ten more: everything before them ages out.
	for i := 10; i < 20; i++ {
		last = write(t, s, "ns", "crm", stored("u1", fmt.Sprintf("e%d", i), `{}`))
	}
	// Read before the prune: the index still names them, the reads skip
	// them.
	page("[e19 e18 e17 e16 e15 e14 e13 e12 e11 e10]")
	if d, err := r.Get(ctx, "ns", "crm", "e3", last); err != nil || d != nil {
		t.Fatalf("get of an aged-out delivery: %+v, %v", d, err)
	}
	if err := r.pruneNow(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		seqs, err := r.idx.seqsOf("ns", "crm", fmt.Sprintf("e%d", i))
		if err != nil || (i < 10) != (seqs == nil) {
			t.Errorf("e%d after the prune: sequences %v, %v", i, seqs, err)
		}
	}
	var listed int
	if err := r.idx.newest("ns", "", last, func(candidate) (bool, error) { listed++; return true, nil }); err != nil || listed != 10 {
		t.Errorf("the namespace's order lists %d deliveries (%v), want 10", listed, err)
	}
	page("[e19 e18 e17 e16 e15 e14 e13 e12 e11 e10]")
}

// TestReadsSeeTheWritesBeforeThem: a read right after a write (acknowledged
// by the stream) sees it, the read waiting for the index; a reader whose
// index does not follow answers, after its wait, as of what it holds.
func TestReadsSeeTheWritesBeforeThem(t *testing.T) {
	s := openStore(t, 0)
	r := newReader(t, s)
	ctx := context.Background()
	for i := range 50 {
		id := fmt.Sprintf("e%d", i)
		write(t, s, "ns", "crm", stored("u1", id, `{}`))
		_, last, err := r.Bounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d, err := r.Get(ctx, "ns", "crm", id, last); err != nil || d == nil {
			t.Fatalf("get %s right after its write: %+v, %v", id, d, err)
		}
		ds, _, err := r.Page(ctx, Query{Namespace: "ns", First: 1, UpTo: last, Limit: 1})
		if err != nil || len(ds) != 1 || ds[0].Object.Spec.EventID != id {
			t.Fatalf("the newest right after writing %s: %v, %v", id, ids(ds), err)
		}
	}

	idle, err := Open(s.JetStream(), Options{Dir: t.TempDir(), CatchUpWait: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = idle.Close() }()
	start := time.Now()
	first, last, err := idle.Bounds(ctx)
	if err != nil || first != 1 || last != 0 {
		t.Fatalf("bounds of a reader whose index is empty: %d..%d, %v; want 1..0 (what it holds)", first, last, err)
	}
	if waited := time.Since(start); waited < 100*time.Millisecond {
		t.Errorf("it answered after %v, without waiting for its index", waited)
	}
}

// TestLogMemoryDoesNotGrowWithDeliveries: the store's in-memory state of
// the log grows with the WebhookConfigs, not with the deliveries kept (a
// subject a WebhookConfig), and the process's heap, with the store
// embedded and the index following, does not grow with five times the
// deliveries: the format of a subject a delivery cost about 190 bytes of
// heap a delivery kept (benchmark measurement 10), 9.5 MiB for the 50,000
// added here.
func TestLogMemoryDoesNotGrowWithDeliveries(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 60,000 deliveries")
	}
	s := openStore(t, 0)
	r := newReaderIn(t, s, Options{Dir: t.TempDir(), CacheBytes: 1 << 20, MemTableBytes: 1 << 20})
	ctx := context.Background()
	js := s.JetStream()
	const webhooks = 10
	n := 0
	writeN := func(count int) {
		t.Helper()
		for range count {
			w := fmt.Sprintf("crm-%d", n%webhooks)
			uid := types.UID("uid-" + w)
			id := fmt.Sprintf("evt_%08d", n)
			msgs, err := store.DeliveryLogMsgs("ns", w, []store.LogRecord{stored(uid, id, `{"n":1}`), attempt(uid, id, 1, webhooksv1alpha1.ResultSucceeded, 200, time.Time{})})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := js.PublishMsgAsync(msgs[0]); err != nil {
				t.Fatal(err)
			}
			n++
			if n%1000 == 0 {
				<-js.PublishAsyncComplete()
			}
		}
		<-js.PublishAsyncComplete()
		for {
			_, last, err := r.Bounds(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if last == uint64(n) {
				break
			}
		}
	}
	heap := func() uint64 {
		// The store keeps a block's records in a buffer for 10 seconds
		// after its last use (8 MiB each, however few records they
		// hold): measured once they went, then collected twice, the
		// store's pooled buffers going at the second.
		time.Sleep(11 * time.Second)
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	writeN(10_000)
	before := heap()
	writeN(50_000)
	after := heap()
	stream, err := js.Stream(ctx, store.StreamDeliveryLog)
	if err != nil {
		t.Fatal(err)
	}
	st := stream.CachedInfo().State
	t.Logf("heap in use: %.1f MiB with 10,000 deliveries, %.1f MiB with 60,000; the stream: %d messages, %d subjects", float64(before)/(1<<20), float64(after)/(1<<20), st.Msgs, st.NumSubjects)
	if st.Msgs != 60_000 || st.NumSubjects != webhooks {
		t.Errorf("the stream holds %d messages on %d subjects, want 60,000 on %d (a subject a WebhookConfig)", st.Msgs, st.NumSubjects, webhooks)
	}
	if growth := int64(after) - int64(before); growth > 4<<20 {
		t.Errorf("the heap grew by %.1f MiB with 50,000 more deliveries kept, want under 4 MiB", float64(growth)/(1<<20))
	}
	// And every one of them is there.
	if d, err := r.Get(ctx, "ns", "crm-3", "evt_00000013", uint64(n)); err != nil || d == nil || len(d.Object.Status.Attempts) != 1 {
		t.Errorf("get of the 14th delivery: %+v, %v", d, err)
	}
}

// TestADeliveryStartedTwiceIsListedOnce: a fan-out done again after a
// crash logs a delivery's Stored record again; the delivery is listed
// once, with its records when the index still had it at hand, and at the
// later start otherwise (the index after a restart).
func TestADeliveryStartedTwiceIsListedOnce(t *testing.T) {
	s := openStore(t, 0)
	dir := t.TempDir()
	ctx := context.Background()
	list := func(r *Reader) string {
		t.Helper()
		first, last, err := r.Bounds(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ds, _, err := r.Page(ctx, Query{Namespace: "ns", First: first, UpTo: last})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(ids(ds))
	}
	r, err := Open(s.JetStream(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(r)
	write(t, s, "ns", "crm", stored("u1", "e1", `{}`))
	write(t, s, "ns", "crm", attempt("u1", "e1", 1, webhooksv1alpha1.ResultRetrying, 503, time.Time{}))
	write(t, s, "ns", "crm", stored("u1", "e2", `{}`))
	write(t, s, "ns", "crm", stored("u1", "e1", `{}`))
	if got := list(r); got != "[e2 e1+1]" {
		t.Errorf("started again, at hand: %s, want [e2 e1+1]", got)
	}
	stop()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r, err = Open(s.JetStream(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	defer run(r)()
	write(t, s, "ns", "crm", stored("u1", "e2", `{}`))
	if got := list(r); got != "[e2 e1+1]" {
		t.Errorf("started again after a restart: %s, want [e2 e1+1]", got)
	}
	if d, err := r.Get(ctx, "ns", "crm", "e2", 5); err != nil || d == nil || d.FirstSeq != 5 {
		t.Errorf("get e2: %+v, %v; want it from sequence 5", d, err)
	}
}
