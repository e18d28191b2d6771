package delivery

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// goneMarks remembers the endpoints that answered 410 Gone, by the
// generation of the resource that was delivered to: their deliveries are
// held until the spec changes (a new generation).
type goneMarks struct {
	mu sync.Mutex
	m  map[types.UID]int64
}

func newGoneMarks() *goneMarks { return &goneMarks{m: map[types.UID]int64{}} }

// mark holds the endpoint's deliveries at this generation.
func (g *goneMarks) mark(uid types.UID, generation int64) {
	g.mu.Lock()
	g.m[uid] = generation
	g.mu.Unlock()
}

// holds reports whether the endpoint answered 410 Gone at this generation.
func (g *goneMarks) holds(uid types.UID, generation int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen, ok := g.m[uid]
	return ok && gen == generation
}

// check is holds for the sync loop: a mark of another generation (the spec
// changed since the 410) is forgotten.
func (g *goneMarks) check(uid types.UID, generation int64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	gen, ok := g.m[uid]
	if ok && gen != generation {
		delete(g.m, uid)
	}
	return ok && gen == generation
}
