package delivery

import (
	"context"
	"slices"
	"sync"
)

// keyClaims serializes, within the process, the requests that post the
// same idempotency key: with the on-disk index, an event with an id is
// stored as its deliveries at once, so two posts of one id at the same
// moment must not both miss the index and both be stored. The first claims
// the key; the second waits for it and is then a duplicate (or, if the
// first was not stored, claims the key itself). The embedded store serves
// one manager process, so a process-wide claim is enough.
type keyClaims struct {
	mu sync.Mutex
	m  map[string]*keyClaim
}

// keyClaim is a key being stored by one request; done is closed when that
// request has finished, stored then saying whether the event was stored.
type keyClaim struct {
	done   chan struct{}
	stored bool
}

// heldKeys are the keys one request claimed, released together.
type heldKeys struct {
	c    *keyClaims
	keys []string
	held []*keyClaim
}

// claim claims keys (a request's idempotency keys; repeats allowed) for
// the caller. A key another request holds is waited for: if that request
// stored its event, the key is reported in stored and not claimed. Keys are
// taken in sorted order, so two requests that share several keys cannot
// wait for each other. The caller must release what it got.
func (c *keyClaims) claim(ctx context.Context, keys []string) (h *heldKeys, stored map[string]bool, err error) {
	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	h = &heldKeys{c: c, keys: make([]string, 0, len(sorted)), held: make([]*keyClaim, 0, len(sorted))}
	for _, k := range sorted {
		for {
			c.mu.Lock()
			if c.m == nil {
				c.m = map[string]*keyClaim{}
			}
			other, busy := c.m[k]
			if !busy {
				own := &keyClaim{done: make(chan struct{})}
				c.m[k] = own
				c.mu.Unlock()
				h.keys = append(h.keys, k)
				h.held = append(h.held, own)
				break
			}
			c.mu.Unlock()
			select {
			case <-other.done:
			case <-ctx.Done():
				h.release(false)
				return nil, nil, ctx.Err()
			}
			if other.stored {
				if stored == nil {
					stored = map[string]bool{}
				}
				stored[k] = true
				break
			}
			// Not stored: claim it ourselves.
		}
	}
	return h, stored, nil
}

// release ends the claims; stored says whether the request stored (or
// found stored) the events of its keys.
func (h *heldKeys) release(stored bool) {
	if h == nil {
		return
	}
	h.c.mu.Lock()
	for i, k := range h.keys {
		delete(h.c.m, k)
		h.held[i].stored = stored
		close(h.held[i].done)
	}
	h.c.mu.Unlock()
	h.keys, h.held = nil, nil
}
