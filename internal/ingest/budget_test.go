package ingest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// batchOf returns an NDJSON batch of exactly size bytes: valid events, then
// blank lines (which count but hold no event).
func batchOf(t testing.TB, size int, event string) []byte {
	t.Helper()
	var b bytes.Buffer
	for n := 0; b.Len()+len(event)+1 <= size-16 && n < MaxBatchEvents; n++ {
		b.WriteString(event)
		b.WriteByte('\n')
	}
	for b.Len() < size {
		b.WriteByte('\n')
	}
	if b.Len() != size {
		t.Fatalf("batch of %d bytes, want %d", b.Len(), size)
	}
	return b.Bytes()
}

// startPlainServer starts a Server on loopback with the test
// authenticator (testToken) and these options.
func startPlainServer(t *testing.T, mutate func(*Options)) *liveServer {
	t.Helper()
	return startLiveServer(t, KubeAuthOptions{}, func(o *Options) {
		o.Auth = AuthenticatorFunc(func(_ context.Context, token, _ string) error {
			if token != testToken {
				return ErrUnauthenticated
			}
			return nil
		})
		mutate(o)
	})
}

func TestBatchOverMaxBatchBytesIs413(t *testing.T) {
	const limit = 64 << 10
	s := startPlainServer(t, func(o *Options) { o.MaxBatchBytes = limit })
	c := clientFrom(t, "127.0.0.1")
	over := batchOf(t, limit+1, validEvent)

	for name, contentLength := range map[string]int64{"with Content-Length": int64(len(over)), "chunked": -1} {
		t.Run("a batch one byte over the limit, "+name, func(t *testing.T) {
			body := io.Reader(bytes.NewReader(over))
			if contentLength < 0 {
				body = io.MultiReader(body) // hides the length: sent chunked
			}
			a := s.postBody(t, c, testToken, "shop", "application/x-ndjson", body, contentLength)
			if a.status != http.StatusRequestEntityTooLarge || a.code != CodeBatchTooLarge {
				t.Fatalf("answer %+v, want 413 %s", a, CodeBatchTooLarge)
			}
			if want := fmt.Sprintf("the batch is larger than the limit of %d bytes for a batch body: split it", limit); !strings.Contains(a.message, want) {
				t.Fatalf("message %q, want it to say %q", a.message, want)
			}
		})
	}
	if n := len(s.enq.enqueued()); n != 0 {
		t.Fatalf("%d Enqueue calls for batches over the limit", n)
	}
	t.Run("a batch at the limit is accepted", func(t *testing.T) {
		at := batchOf(t, limit, validEvent)
		if a := s.postBody(t, c, testToken, "shop", "application/x-ndjson", bytes.NewReader(at), int64(len(at))); a.status != http.StatusAccepted {
			t.Fatalf("answer %+v, want 202", a)
		}
	})
}

func TestPostsOverTheDecodingLimitGet503(t *testing.T) {
	const batchBytes = 64 << 10
	s := startPlainServer(t, func(o *Options) {
		o.MaxBatchBytes = batchBytes
		o.MaxDecodingBytes = 3 * batchBytes
	})
	release := make(chan struct{})
	s.enq.block = release
	c := clientFrom(t, "127.0.0.1")
	batch := batchOf(t, batchBytes, validEvent)
	post := func(contentLength int64) answer {
		var body io.Reader = bytes.NewReader(batch)
		if contentLength < 0 {
			body = io.MultiReader(body)
		}
		return s.postBody(t, c, testToken, "shop", "application/x-ndjson", body, contentLength)
	}

	// Three batches at the limit fill the room, and wait to be stored.
	held := make(chan answer, 3)
	for range 3 {
		go func() { held <- post(int64(len(batch))) }()
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if n := len(s.enq.enqueued()); n != 3 {
			return fmt.Errorf("%d batches waiting to be stored, want 3", n)
		}
		return nil
	})

	// Twenty more at once, with and without Content-Length, and one small
	// event: none fits, each is told to retry, nothing more is read.
	var wg sync.WaitGroup
	var refused atomic.Int32
	check := func(what string, a answer) {
		if a.status != http.StatusServiceUnavailable || a.code != CodeOverloaded || a.retryAfter != "1" || a.message == "" {
			t.Errorf("%s while the room is full: %+v, want 503 %s with Retry-After 1", what, a, CodeOverloaded)
			return
		}
		refused.Add(1)
	}
	for i := range 20 {
		contentLength := int64(len(batch))
		if i%2 == 1 {
			contentLength = -1
		}
		wg.Go(func() { check(fmt.Sprintf("batch %d", i), post(contentLength)) })
	}
	wg.Go(func() { check("a single event", s.post(t, c, testToken, "shop")) })
	wg.Wait()
	if refused.Load() != 21 {
		t.Fatalf("%d of 21 posts refused with 503", refused.Load())
	}
	if n := len(s.enq.enqueued()); n != 3 {
		t.Fatalf("%d Enqueue calls, want the 3 admitted batches only", n)
	}

	// Stored, their room is free again.
	close(release)
	for range 3 {
		if a := <-held; a.status != http.StatusAccepted {
			t.Fatalf("an admitted batch: %+v, want 202", a)
		}
	}
	if a := post(int64(len(batch))); a.status != http.StatusAccepted {
		t.Fatalf("a batch after the room freed: %+v, want 202", a)
	}
	if a := post(-1); a.status != http.StatusAccepted {
		t.Fatalf("a chunked batch after the room freed: %+v, want 202", a)
	}
}

// TestTwentyBatchesAtTheLimitStayWithinTheDecodingBound posts 20 batches
// of the default 8 MiB at once with the default limits, while the store
// holds every batch it is given, and measures the heap: only
// DefaultMaxDecodingBytes of them are read at once, the rest are refused.
func TestTwentyBatchesAtTheLimitStayWithinTheDecodingBound(t *testing.T) {
	if testing.Short() {
		t.Skip("posts 160 MiB")
	}
	s := startPlainServer(t, func(o *Options) { o.MaxEventBytes = 0 }) // the defaults
	release := make(chan struct{})
	s.enq.block = release
	c := clientFrom(t, "127.0.0.1")
	// 1000 events of about 8 KiB: the largest batch by both limits.
	text := strings.Repeat("Halo Budi, pesanan Anda sudah dikirim. ", 250)[:DefaultMaxBatchBytes/MaxBatchEvents-300]
	event := `{"type":"message.sent","data":{"messageId":"m1","sessionId":"s1","to":"+6281234567890","text":"` + text + `"}}`
	batch := batchOf(t, DefaultMaxBatchBytes, event)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	answers := make(chan answer, 20)
	for range 20 {
		go func() {
			answers <- s.postBody(t, c, testToken, "shop", "application/x-ndjson", bytes.NewReader(batch), int64(len(batch)))
		}()
	}
	admitted := DefaultMaxDecodingBytes / DefaultMaxBatchBytes
	var refused int
	for range 20 - admitted {
		a := <-answers
		if a.status != http.StatusServiceUnavailable || a.code != CodeOverloaded {
			t.Fatalf("answer %+v, want 503 %s for the batches over the bound", a, CodeOverloaded)
		}
		refused++
	}
	testutil.Eventually(t, 60*time.Second, func() error {
		if n := len(s.enq.enqueued()); n != admitted {
			return fmt.Errorf("%d batches decoded, want %d", n, admitted)
		}
		return nil
	})
	close(stop)
	<-sampled
	close(release)
	for range admitted {
		if a := <-answers; a.status != http.StatusAccepted {
			t.Fatalf("an admitted batch: %+v", a)
		}
	}
	grew := int64(peak.Load()) - int64(before.HeapAlloc)
	t.Logf("20 batches of %d bytes: %d admitted, %d refused; heap grew by at most %.1f MiB (bodies held at once: %d MiB)",
		len(batch), admitted, refused, float64(grew)/(1<<20), DefaultMaxDecodingBytes>>20)
	// Read all at once, the 20 batches take several times this bound (see
	// docs/benchmarks.md for both figures).
	if limit := int64(3 * DefaultMaxDecodingBytes); grew >= limit {
		t.Fatalf("the heap grew by %d bytes, want less than %d", grew, limit)
	}
}
