// Package endpoint holds what a WebhookConfig resolves to for delivery: the
// Endpoint (URL, signing keys, subscribed types, the resolved delivery
// Policy) and the Registry the controller fills and the dispatcher reads.
package endpoint

import (
	"bytes"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Policy is an endpoint's resolved delivery policy.
type Policy struct {
	// Timeout bounds one attempt.
	Timeout time.Duration
	// MaxAttempts is the number of attempts, the first included.
	MaxAttempts int
	// InitialBackoff is the delay before the first retry.
	InitialBackoff time.Duration
	// MaxBackoff caps any delay between attempts, Retry-After included.
	MaxBackoff time.Duration
	// MaxAge gives up on an event this long after it was accepted.
	MaxAge time.Duration
	// MaxInFlight is the most requests open to the endpoint at once.
	MaxInFlight int
	// PerKey is spec.delivery.ordering PerKey: the deliveries of one
	// ordering key are made one after the other, in acceptance order.
	PerKey bool
}

// Endpoint is one WebhookConfig as the dispatcher sees it: everything needed
// to deliver, with the signing secret already resolved into key bytes.
type Endpoint struct {
	Namespace string
	Name      string
	// UID identifies this incarnation of the resource; counters are kept per UID.
	UID types.UID
	// Generation is the metadata.generation this configuration was built from.
	Generation int64
	URL        string
	// Keys are the HMAC keys, current first; more than one during a rotation.
	Keys [][]byte
	// Events are the subscribed types; "*" subscribes to every type.
	Events []string
	// Enabled is spec.enabled. Disabled endpoints get only test deliveries.
	Enabled bool
	// Paused is spec.paused: the endpoint still subscribes (its deliveries
	// are stored) but has no worker, so nothing is sent until it is false.
	Paused bool
	Policy Policy
	// Filter is spec.filter compiled, nil without one: only events it is
	// true for are delivered (Matching).
	Filter *Filter
	// OrderingKey is spec.delivery.orderingKey compiled (the default one
	// when omitted) when Policy.PerKey, nil otherwise.
	OrderingKey *OrderingKey

	// parsedURL is URL parsed, set by WithParsedURL on the copies workers
	// hold (which nothing changes) so attempts do not parse it each time;
	// nil elsewhere.
	parsedURL *url.URL
}

// WithParsedURL returns a copy of e that carries its URL parsed (when it
// parses; RequestURL reports the error otherwise).
func (e *Endpoint) WithParsedURL() *Endpoint {
	cp := *e
	cp.parsedURL = nil
	if u, err := url.Parse(cp.URL); err == nil {
		cp.parsedURL = u
	}
	return &cp
}

// RequestURL is the URL deliveries are posted to. It is shared between
// requests, which only read it.
func (e *Endpoint) RequestURL() (*url.URL, error) {
	if e.parsedURL != nil {
		return e.parsedURL, nil
	}
	return url.Parse(e.URL)
}

// Key returns the endpoint's namespaced name.
func (e *Endpoint) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: e.Namespace, Name: e.Name}
}

// Subscribes reports whether the endpoint receives events of type t.
func (e *Endpoint) Subscribes(t string) bool {
	for _, s := range e.Events {
		if s == "*" || s == t {
			return true
		}
	}
	return false
}

// Equal reports whether two endpoints carry the same configuration.
func (e *Endpoint) Equal(o *Endpoint) bool {
	return e.Namespace == o.Namespace && e.Name == o.Name && e.UID == o.UID &&
		e.Generation == o.Generation && e.URL == o.URL && e.Enabled == o.Enabled && e.Paused == o.Paused &&
		e.Policy == o.Policy && slices.Equal(e.Events, o.Events) && e.Filter.Source() == o.Filter.Source() &&
		e.OrderingKey.Source() == o.OrderingKey.Source() &&
		slices.EqualFunc(e.Keys, o.Keys, bytes.Equal)
}

// Registry is the dispatcher's live configuration: the resolved endpoints of
// every WebhookConfig that is Ready. Implementations are safe for concurrent use.
type Registry interface {
	// Upsert adds or replaces the endpoint with the same namespace and name.
	Upsert(ep Endpoint)
	// Remove deletes the endpoint; removing an absent one is a no-op.
	Remove(key types.NamespacedName)
	// Get returns the endpoint and true, or false when it is not registered.
	Get(key types.NamespacedName) (Endpoint, bool)
	// Subscribers returns the enabled endpoints of namespace subscribed to
	// eventType, sorted by name.
	Subscribers(namespace, eventType string) []Endpoint
	// List returns every registered endpoint, sorted by namespace and name.
	List() []Endpoint
	// MarkSynced records that the registry holds every resource that existed
	// when the manager started; Synced is closed from then on.
	MarkSynced()
	// Synced is closed once MarkSynced has been called.
	Synced() <-chan struct{}
}

// MemoryRegistry is the in-memory Registry. The zero value is not usable; call NewMemoryRegistry.
type MemoryRegistry struct {
	mu       sync.RWMutex
	byNS     map[string]map[string]Endpoint
	synced   chan struct{}
	syncOnce sync.Once
}

var _ Registry = (*MemoryRegistry)(nil)

// NewMemoryRegistry returns an empty registry.
func NewMemoryRegistry() *MemoryRegistry {
	return &MemoryRegistry{byNS: map[string]map[string]Endpoint{}, synced: make(chan struct{})}
}

// Upsert implements Registry.
func (r *MemoryRegistry) Upsert(ep Endpoint) {
	ep.Keys = slices.Clone(ep.Keys)
	ep.Events = slices.Clone(ep.Events)
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.byNS[ep.Namespace]
	if ns == nil {
		ns = map[string]Endpoint{}
		r.byNS[ep.Namespace] = ns
	}
	ns[ep.Name] = ep
}

// Remove implements Registry.
func (r *MemoryRegistry) Remove(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ns := r.byNS[key.Namespace]
	delete(ns, key.Name)
	if len(ns) == 0 {
		delete(r.byNS, key.Namespace)
	}
}

// Get implements Registry.
func (r *MemoryRegistry) Get(key types.NamespacedName) (Endpoint, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ep, ok := r.byNS[key.Namespace][key.Name]
	return ep, ok
}

// Subscribers implements Registry.
func (r *MemoryRegistry) Subscribers(namespace, eventType string) []Endpoint {
	r.mu.RLock()
	var out []Endpoint
	for _, ep := range r.byNS[namespace] {
		if ep.Enabled && ep.Subscribes(eventType) {
			out = append(out, ep)
		}
	}
	r.mu.RUnlock()
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b Endpoint) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}

// List implements Registry.
func (r *MemoryRegistry) List() []Endpoint {
	r.mu.RLock()
	var out []Endpoint
	for _, ns := range r.byNS {
		for _, ep := range ns {
			out = append(out, ep)
		}
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// MarkSynced implements Registry.
func (r *MemoryRegistry) MarkSynced() { r.syncOnce.Do(func() { close(r.synced) }) }

// Synced implements Registry.
func (r *MemoryRegistry) Synced() <-chan struct{} { return r.synced }
