package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// orderedPassResult is one pass of the ordering measurement.
type orderedPassResult struct {
	events  int
	elapsed time.Duration
	cpu     time.Duration
}

func (r orderedPassResult) rate() float64 { return perSec(r.events, r.elapsed) }

// orderedEvent is benchEvent(i) with the messageId of key i % keys, its
// (i / keys + 1)-th event: the default ordering key orders the events of
// one key.
func orderedEvent(i, keys int) testutil.Posted {
	ev := benchEvent(i)
	const field = `"messageId":"`
	at := bytes.Index(ev.Data, []byte(field)) + len(field)
	end := at + bytes.IndexByte(ev.Data[at:], '"')
	data := slices.Concat(ev.Data[:at], fmt.Appendf(nil, "K%05d", i%keys), ev.Data[end:])
	ev.Data = data
	return ev
}

// measureOrdered compares the delivered throughput of one PerKey endpoint
// (1,000 keys) with one Unordered endpoint, side by side in each round.
func measureOrdered(ctx context.Context, sz sizes) *result {
	res := &result{}
	keys, rcv, err := newSecretAndReceiver()
	if err != nil {
		return res.fail(err)
	}
	defer rcv.close()
	type round struct{ unordered, perKey orderedPassResult }
	var rounds []round
	base := 0
	for r := range sz.OrderedRounds {
		var rd round
		for _, perKey := range []bool{false, true} {
			pr, err := orderedPass(ctx, sz, keys, rcv, perKey, base)
			if err != nil {
				return res.fail(fmt.Errorf("round %d, PerKey %v: %w", r+1, perKey, err))
			}
			fmt.Fprintf(os.Stderr, "   round %d, PerKey %v: %s, %.0f µs of CPU per event\n", r+1, perKey, fmtRate(pr.rate(), "deliveries/s"), us(pr.cpu)/float64(pr.events))
			base += sz.OrderedEvents
			if perKey {
				rd.perKey = pr
			} else {
				rd.unordered = pr
			}
		}
		rounds = append(rounds, rd)
	}
	ratio := func(rd round) float64 { return rd.perKey.rate() / rd.unordered.rate() }
	med, all := medianRound(rounds, ratio)
	res.info(fmt.Sprintf("12. delivered throughput, PerKey with %d keys / Unordered (median of %d rounds)", orderedKeys, len(rounds)),
		fmt.Sprintf("%.2f (%s vs %s)", ratio(med), fmtRate(med.perKey.rate(), "deliveries/s"), fmtRate(med.unordered.rate(), "deliveries/s")))
	res.info("12. this process's CPU per delivery, PerKey / Unordered (the median round)", fmt.Sprintf("%.2f (%.0f µs vs %.0f µs)",
		(us(med.perKey.cpu)/float64(med.perKey.events))/(us(med.unordered.cpu)/float64(med.unordered.events)),
		us(med.perKey.cpu)/float64(med.perKey.events), us(med.unordered.cpu)/float64(med.unordered.events)))
	res.notef("Each pass starts a fresh pipeline with one endpoint (maxInFlight %d) and posts %d single events without ids from %d posters, each event the n-th of one of %d keys (its messageId; the default ordering key), each poster posting its keys' events one after the other, so a key's events are accepted in order. Timed from the first post to the last first delivery at the receiver. The PerKey pass then checks that every key's events first arrived in the order they were posted, and both check every body against what was posted. The ratios of the rounds: %s. A PerKey delivery costs more store work than an unordered one: it is moved into its key's queue (one write), its key's head is read (one direct get) and removed once delivered (one delete), and a key's next event waits for its previous one's answer.",
		maxInFlight, sz.OrderedEvents, sz.C, orderedKeys, fmtList(all))
	return res
}

// orderedKeys is how many ordering keys the ordering measurement's events have.
const orderedKeys = 1000

// orderedPass runs one pass of measureOrdered: events base.. are posted.
func orderedPass(ctx context.Context, sz sizes, keys benchSecret, rcv *receiver, perKey bool, base int) (orderedPassResult, error) {
	ep := benchEndpoint("ordered", rcv.URL+"/ordered", keys.keys)
	if perKey {
		ep.Policy.PerKey = true
		k, err := endpoint.CompileOrderingKey(benchNS, ep.Name, "")
		if err != nil {
			return orderedPassResult{}, err
		}
		ep.OrderingKey = k
	}
	p, err := startPipeline(ctx, []endpoint.Endpoint{ep})
	if err != nil {
		return orderedPassResult{}, err
	}
	defer p.stop()
	c := newPostClient(sz.C)
	defer c.CloseIdleConnections()
	url, hdr := p.EventsURL(), ingestHeader()

	n := sz.OrderedEvents
	bodies := make([][]byte, n)
	posted := make([][]testutil.Posted, n)
	for i := range bodies {
		ev := orderedEvent(base+i, orderedKeys)
		bodies[i], posted[i] = ev.JSON(false), []testutil.Posted{ev}
	}
	answers := make([][]byte, n)
	rcv.reset(n)
	name := "ordered-unordered"
	if perKey {
		name = "ordered-perkey"
	}
	stopProfile := startProfile(name)
	cpu0 := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, sz.C)
	for w := range sz.C {
		wg.Go(func() {
			// Poster w posts the events of the keys k with k % C == w, in order.
			for i := range n {
				if (base+i)%orderedKeys%sz.C != w {
					continue
				}
				code, rb, err := post(ctx, c, url, "application/json", bodies[i], hdr)
				if err == nil && code != http.StatusAccepted {
					err = fmt.Errorf("ingest answered %d: %s", code, rb)
				}
				if err != nil {
					errs <- err
					return
				}
				answers[i] = rb
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		stopProfile()
		return orderedPassResult{}, err
	}
	last, err := rcv.wait(ctx, waitBudget(n))
	cpu := processCPU() - cpu0
	stopProfile()
	if err != nil {
		u, _, _ := rcv.counts()
		return orderedPassResult{}, fmt.Errorf("%d of %d deliveries received: %w", u, n, err)
	}
	ids, err := recordAccepted(rcv.Ledger, posted, answers)
	if err != nil {
		return orderedPassResult{}, err
	}
	if err := rcv.check(name, ids); err != nil {
		return orderedPassResult{}, err
	}
	if perKey {
		if err := checkKeyOrder(rcv.times(), "/ordered", ids, base); err != nil {
			return orderedPassResult{}, err
		}
	}
	return orderedPassResult{events: n, elapsed: last.Sub(start), cpu: cpu}, nil
}

// checkKeyOrder requires the events of each key (ids[i] is event base+i)
// to have first arrived in the order they were posted.
func checkKeyOrder(first map[string]time.Time, path string, ids []string, base int) error {
	lastAt := map[int]time.Time{}
	lastID := map[int]string{}
	bad := 0
	var example string
	for i, id := range ids {
		k := (base + i) % orderedKeys
		at, ok := first[path+" "+id]
		if !ok {
			return fmt.Errorf("event %s never arrived", id)
		}
		if prev, seen := lastAt[k]; seen && !at.After(prev) {
			bad++
			if example == "" {
				example = fmt.Sprintf("key K%05d: %s arrived at %s, before %s, posted earlier (%s)", k, id, at.Format(time.StampMicro), lastID[k], prev.Format(time.StampMicro))
			}
		}
		lastAt[k], lastID[k] = at, id
	}
	if bad > 0 {
		return fmt.Errorf("%d events arrived before an earlier event of their key, for example %s", bad, example)
	}
	return nil
}
