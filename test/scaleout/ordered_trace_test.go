//go:build scaleout

package scaleout

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TEMPORARY diagnostics: a core NATS tracer of JetStream deliveries
// (messages sent to pull requests' inboxes carry an ack reply naming the
// stream sequence and the delivery count) and acknowledgements.
type jsTracer struct {
	t0  time.Time
	mu  sync.Mutex
	ev  map[string][]string // event id -> deliveries and acks
	seq map[string]string   // stream/seq -> event id
	nc  *nats.Conn
}

func startTracer(t *testing.T, url string, t0 time.Time) *jsTracer {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	tr := &jsTracer{t0: t0, ev: map[string][]string{}, seq: map[string]string{}, nc: nc}
	_, err = nc.Subscribe("_INBOX.>", func(m *nats.Msg) {
		if !strings.HasPrefix(m.Reply, "$JS.ACK.") {
			return
		}
		tok := strings.Split(m.Reply, ".")
		if len(tok) < 9 {
			return
		}
		stream, cons, dc, sseq := tok[2], tok[3], tok[4], tok[5]
		id := m.Header.Get("Wh-Event-Id")
		if id == "" {
			id = "batch"
		}
		tr.mu.Lock()
		tr.seq[stream+"/"+sseq] = id
		tr.ev[id] = append(tr.ev[id], fmt.Sprintf("%s/%s seq %s dc %s to %s @%.2fs", stream, short(cons), sseq, dc, m.Subject[:14], time.Since(t0).Seconds()))
		tr.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = nc.Subscribe("$JS.ACK.>", func(m *nats.Msg) {
		tok := strings.Split(m.Subject, ".")
		if len(tok) < 9 {
			return
		}
		stream, cons, sseq := tok[2], tok[3], tok[5]
		tr.mu.Lock()
		id := tr.seq[stream+"/"+sseq]
		tr.ev[id] = append(tr.ev[id], fmt.Sprintf("ack(%q) %s/%s seq %s @%.2fs", m.Data, stream, short(cons), sseq, time.Since(t0).Seconds()))
		tr.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return tr
}

func short(s string) string {
	if len(s) > 14 {
		return s[:14]
	}
	return s
}

func (tr *jsTracer) of(id string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return strings.Join(tr.ev[id], "; ")
}
