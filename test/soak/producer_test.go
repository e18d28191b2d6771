//go:build soak

package soak

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// producer posts single JSON events at a steady open-loop rate: a pacer
// hands the events due so far to a few posters every 10 ms, whether or not
// earlier posts have been answered. An event not answered 202 (no answer,
// 503, 429) is posted again the way a producer would, with the same id when
// the run gives ids; every accepted event is recorded in the Ledger with the
// moment of its 202.
type producer struct {
	cfg    config
	url    string // the ingestion API's events URL
	token  string
	client *http.Client
	ledger *testutil.Ledger

	posted        atomic.Int64 // distinct events posted at least once
	accepted      atomic.Int64 // distinct events answered 202
	skipped       atomic.Int64 // due events not posted: every poster busy and the queue full
	neverAccepted atomic.Int64 // events given up on after retryFor
	rejected      atomic.Int64 // events answered with a status not worth retrying
	non202        atomic.Int64 // answers other than 202, retries included
	lastAccept    atomic.Int64 // Unix nanoseconds of the last 202

	mu         sync.Mutex
	codes      map[string]int       // every answer by status, "no answer" for transport errors
	acceptedAt map[string]time.Time // webhook-id -> its 202
	respTimes  []time.Duration      // of the 202 answers
	examples   []string             // the first few answers that were not 202
	ledgerErrs []string             // 202 bodies that did not name the event posted
}

// retryFor is how long a producer keeps posting an event that is not accepted.
const retryFor = 2 * time.Minute

func newProducer(cfg config, ingestAddr, ns, token string, ledger *testutil.Ledger) *producer {
	return &producer{
		cfg:    cfg,
		url:    "http://" + ingestAddr + "/v1/namespaces/" + ns + "/events",
		token:  token,
		ledger: ledger,
		client: &http.Client{
			Timeout:   30 * time.Second,
			Transport: &http.Transport{MaxIdleConns: 2 * cfg.Posters, MaxIdleConnsPerHost: 2 * cfg.Posters, IdleConnTimeout: time.Minute},
		},
		codes:      map[string]int{},
		acceptedAt: map[string]time.Time{},
	}
}

// eventSource hands out distinct events, made by testutil.VariedEvents in
// blocks of 1000 (each block its own id prefix, so ids and data differ
// across blocks too).
type eventSource struct {
	block int
	buf   []testutil.Posted
}

func (s *eventSource) next() testutil.Posted {
	if len(s.buf) == 0 {
		s.block++
		s.buf = testutil.VariedEvents(fmt.Sprintf("s%d", s.block), 1000)
	}
	ev := s.buf[0]
	s.buf = s.buf[1:]
	return ev
}

// run posts from start until until at the configured rate and returns when
// every poster is done (its last event accepted or given up on).
func (p *producer) run(src *eventSource, start, until time.Time) {
	jobs := make(chan testutil.Posted, max(64, int(2*p.cfg.Rate)))
	var wg sync.WaitGroup
	for range p.cfg.Posters {
		wg.Go(func() {
			for ev := range jobs {
				p.post(ev, false)
			}
		})
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var handed int64
	for {
		now := time.Now()
		if !now.Before(until) {
			break
		}
		due := int64(p.cfg.Rate * now.Sub(start).Seconds())
		for ; handed < due; handed++ {
			select {
			case jobs <- src.next():
			default:
				// Open loop: an event that finds every poster busy and the
				// queue (2 s of events) full is not posted late; it is counted.
				p.skipped.Add(1)
			}
		}
		<-tick.C
	}
	close(jobs)
	wg.Wait()
	p.client.CloseIdleConnections()
}

// post posts ev until it is accepted, rejected or retryFor has passed.
// preflight also retries 401 and 403 (the static token is not yet in the
// manager's cache), without counting them.
func (p *producer) post(ev testutil.Posted, preflight bool) bool {
	body := ev.JSON(p.cfg.IDs)
	p.posted.Add(1)
	deadline := time.Now().Add(retryFor)
	wait := 100 * time.Millisecond
	for {
		sent := time.Now()
		code, respBody, retryAfter, err := p.send(body)
		took := time.Since(sent)
		key := strconv.Itoa(code)
		if err != nil {
			key = "no answer"
		}
		// The preflight's 401s and 403s only say the token is not cached yet.
		unauthorized := preflight && (code == http.StatusUnauthorized || code == http.StatusForbidden)
		if !unauthorized {
			p.mu.Lock()
			p.codes[key]++
			if code != http.StatusAccepted && len(p.examples) < 8 {
				msg := strings.TrimSpace(string(respBody))
				if err != nil {
					msg = err.Error()
				}
				p.examples = append(p.examples, fmt.Sprintf("%s %s: %s", sent.Format("15:04:05.000"), key, msg))
			}
			p.mu.Unlock()
		}
		if code == http.StatusAccepted {
			p.record(ev, respBody, took)
			return true
		}
		if !unauthorized {
			p.non202.Add(1)
		}
		retry := err != nil || code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests || unauthorized
		if !retry {
			p.rejected.Add(1)
			return false
		}
		if time.Now().After(deadline) {
			p.neverAccepted.Add(1)
			return false
		}
		d := wait
		if retryAfter > 0 {
			d = min(retryAfter, 5*time.Second)
		}
		time.Sleep(d)
		wait = min(2*wait, 2*time.Second)
	}
}

// send posts one body; err is set when no HTTP answer came.
func (p *producer) send(body []byte) (code int, respBody []byte, retryAfter time.Duration, err error) {
	req, err := http.NewRequest(http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	respBody, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, nil, 0, err
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	return resp.StatusCode, respBody, retryAfter, nil
}

// record files an accepted event in the Ledger under the id the 202 named.
func (p *producer) record(ev testutil.Posted, respBody []byte, took time.Duration) {
	now := time.Now()
	posted := ev
	if !p.cfg.IDs {
		posted.ID = "" // the API generated the id; the 202 names it
	}
	ids, err := p.ledger.Accepted([]testutil.Posted{posted}, respBody)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.respTimes = append(p.respTimes, took)
	if err != nil {
		p.ledgerErrs = append(p.ledgerErrs, err.Error())
		return
	}
	if _, dup := p.acceptedAt[ids[0]]; !dup {
		p.acceptedAt[ids[0]] = now
		p.accepted.Add(1)
	}
	p.lastAccept.Store(now.UnixNano())
}

// acceptedTimes returns a copy of the 202 moments by webhook-id.
func (p *producer) acceptedTimes() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.acceptedAt)
}

// codeSummary lists the answers by status, most frequent first, e.g.
// "202 ×1200, 503 ×3".
func (p *producer) codeSummary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(p.codes))
	for k := range p.codes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if p.codes[keys[i]] != p.codes[keys[j]] {
			return p.codes[keys[i]] > p.codes[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, p.codes[k])
	}
	return strings.Join(parts, ", ")
}
