package ingest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The manager needs these to check Kubernetes tokens and to read static
// ingest tokens from Secrets (list, by their label, uncached) in every
// namespace it serves.
//
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch

const (
	// LabelIngestToken marks a Secret whose "token" key holds a static
	// ingest token for the Secret's namespace. The value must be "true".
	LabelIngestToken = "webhooks.wablast.io/ingest-token"
	// IngestTokenKey is the Secret key holding a static ingest token.
	IngestTokenKey = "token"
	// MinStaticTokenBytes is the minimum length of a static ingest token;
	// shorter tokens are ignored (and logged, without their value).
	MinStaticTokenBytes = 16

	// The resource attributes a Kubernetes token's user must be allowed.
	authzVerb     = "create"
	authzGroup    = "webhooks.wablast.io"
	authzResource = "webhookevents"

	// DefaultAuthCacheTTL is how long a decision is cached when
	// NewKubeAuthenticator is given a ttl <= 0.
	DefaultAuthCacheTTL = 10 * time.Second
	// maxCachedDecisions caps the decision cache.
	maxCachedDecisions = 10000
	// minIndexRebuildInterval limits rebuilds of the static token index
	// triggered by unknown tokens.
	minIndexRebuildInterval = time.Second
)

type tokenHash = [sha256.Size]byte

type decisionKey struct {
	token     tokenHash
	namespace string
}

type decision struct {
	err     error // nil (allowed), or wrapping ErrUnauthenticated or ErrForbidden
	expires time.Time
}

// call is one decision being made, which concurrent requests for the same
// key wait for instead of asking the API server again.
type call struct {
	done chan struct{}
	err  error
}

// KubeAuthenticator authorizes bearer tokens against the cluster (CONTRACT
// section 4):
//
//   - A static token is the "token" key of a Secret labelled
//     webhooks.wablast.io/ingest-token: "true" (surrounding whitespace is
//     ignored; tokens shorter than MinStaticTokenBytes are ignored). It is
//     allowed in its Secret's namespace and forbidden in every other one.
//   - Any other token is a Kubernetes token: a TokenReview must
//     authenticate it (else ErrUnauthenticated), then a SubjectAccessReview
//     must allow its user to create webhookevents.webhooks.wablast.io in the
//     namespace (else ErrForbidden).
//
// Decisions, allow and deny, are cached per (SHA-256 of the token,
// namespace) for the TTL, so a revoked token or a removed RoleBinding can
// still post for up to one TTL, and a new RoleBinding takes up to one TTL to
// apply to a token that was just denied. Errors talking to the API server
// are not cached. Tokens are kept only as SHA-256 hashes and never logged.
//
// It is safe for concurrent use.
type KubeAuthenticator struct {
	clientset kubernetes.Interface
	secrets   client.Reader
	// namespaces limits the authenticator to these namespaces; nil means all.
	namespaces []string
	ttl        time.Duration
	now        func() time.Time
	// maxEntries caps the decision cache.
	maxEntries int

	mu        sync.Mutex
	decisions map[decisionKey]decision
	inflight  map[decisionKey]*call

	indexMu    sync.Mutex
	index      map[tokenHash][]string // static token hash -> namespaces
	indexBuilt time.Time
}

var _ Authenticator = (*KubeAuthenticator)(nil)

// NewKubeAuthenticator returns an authenticator that reviews tokens with cs
// and lists static token Secrets, by their label, across all namespaces,
// through secrets. In the manager that is its API reader, not its cache: the
// cache would keep the value of every Secret in the cluster in memory, while
// the index keeps only SHA-256 hashes of the ingest tokens. ttl is how long
// decisions are cached, DefaultAuthCacheTTL when <= 0; it is also the longest
// a static token index is used before it is rebuilt (one List).
func NewKubeAuthenticator(cs kubernetes.Interface, secrets client.Reader, ttl time.Duration) *KubeAuthenticator {
	if ttl <= 0 {
		ttl = DefaultAuthCacheTTL
	}
	return &KubeAuthenticator{
		clientset:  cs,
		secrets:    secrets,
		ttl:        ttl,
		now:        time.Now,
		maxEntries: maxCachedDecisions,
		decisions:  make(map[decisionKey]decision),
		inflight:   make(map[decisionKey]*call),
	}
}

// LimitToNamespaces makes a serve only these namespaces (a namespace-scoped
// install, --watch-namespaces): static token Secrets are listed in each of
// them, and a request for any other namespace is forbidden before any token
// is looked at. Empty means every namespace. It must be called before the
// first Authorize; it returns a.
func (a *KubeAuthenticator) LimitToNamespaces(namespaces []string) *KubeAuthenticator {
	a.namespaces = slices.Clone(namespaces)
	return a
}

// Authorize implements Authenticator. See KubeAuthenticator for the rules.
func (a *KubeAuthenticator) Authorize(ctx context.Context, token, namespace string) error {
	if token == "" {
		return fmt.Errorf("%w: no token", ErrUnauthenticated)
	}
	if len(a.namespaces) > 0 && !slices.Contains(a.namespaces, namespace) {
		return fmt.Errorf("%w: this operator does not serve namespace %q", ErrForbidden, namespace)
	}
	key := decisionKey{token: sha256.Sum256([]byte(token)), namespace: namespace}

	a.mu.Lock()
	if d, ok := a.decisions[key]; ok {
		if a.now().Before(d.expires) {
			a.mu.Unlock()
			return d.err
		}
		delete(a.decisions, key)
	}
	if c, ok := a.inflight[key]; ok {
		a.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return fmt.Errorf("waiting for an authorization decision: %w", ctx.Err())
		}
	}
	c := &call{done: make(chan struct{})}
	a.inflight[key] = c
	a.mu.Unlock()

	c.err = a.decide(ctx, token, key)

	a.mu.Lock()
	delete(a.inflight, key)
	if errors.Is(c.err, ErrUnauthenticated) || errors.Is(c.err, ErrForbidden) || c.err == nil {
		a.store(key, c.err)
	}
	a.mu.Unlock()
	close(c.done)
	return c.err
}

// store caches a decision; a.mu must be held.
func (a *KubeAuthenticator) store(key decisionKey, err error) {
	now := a.now()
	if len(a.decisions) >= a.maxEntries {
		for k, d := range a.decisions {
			if !now.Before(d.expires) {
				delete(a.decisions, k)
			}
		}
		// Still full of live entries: drop arbitrary ones (map order is
		// random) to make room for a tenth of the cap.
		for k := range a.decisions {
			if len(a.decisions) < a.maxEntries*9/10 {
				break
			}
			delete(a.decisions, k)
		}
	}
	a.decisions[key] = decision{err: err, expires: now.Add(a.ttl)}
}

// decide makes an uncached decision.
func (a *KubeAuthenticator) decide(ctx context.Context, token string, key decisionKey) error {
	namespaces, err := a.staticNamespaces(ctx, key.token)
	if err != nil {
		return err
	}
	if namespaces != nil {
		if slices.Contains(namespaces, key.namespace) {
			return nil
		}
		return fmt.Errorf("%w: this static ingest token belongs to another namespace and may not post events in namespace %q", ErrForbidden, key.namespace)
	}
	return a.review(ctx, token, key.namespace)
}

// review checks a Kubernetes token with a TokenReview and a
// SubjectAccessReview.
func (a *KubeAuthenticator) review(ctx context.Context, token, namespace string) error {
	tr, err := a.clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("reviewing the token: %w", err)
	}
	if !tr.Status.Authenticated {
		return fmt.Errorf("%w: the token is neither a valid Kubernetes token nor a static ingest token", ErrUnauthenticated)
	}
	user := tr.Status.User
	extra := make(map[string]authorizationv1.ExtraValue, len(user.Extra))
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user.Username,
			Groups: user.Groups,
			UID:    user.UID,
			Extra:  extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: namespace,
				Verb:      authzVerb,
				Group:     authzGroup,
				Resource:  authzResource,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("reviewing the access of %q: %w", user.Username, err)
	}
	if !sar.Status.Allowed || sar.Status.Denied {
		return fmt.Errorf("%w: %q may not create %s.%s in namespace %q", ErrForbidden, user.Username, authzResource, authzGroup, namespace)
	}
	return nil
}

// staticNamespaces returns the namespaces whose ingest token Secrets hold a
// token with this hash, or nil when none does. The index is rebuilt from a
// List when it is older than the TTL, or when the hash is unknown and the
// index is older than minIndexRebuildInterval, so a new Secret is usable
// within a second. If a rebuild fails, the previous index is used; without
// one, the error is returned.
func (a *KubeAuthenticator) staticNamespaces(ctx context.Context, hash tokenHash) ([]string, error) {
	a.indexMu.Lock()
	defer a.indexMu.Unlock()
	age := a.now().Sub(a.indexBuilt)
	namespaces := a.lookup(hash)
	if a.index == nil || age >= a.ttl || (namespaces == nil && age >= minIndexRebuildInterval) {
		if err := a.rebuildIndex(ctx); err != nil {
			if a.index == nil {
				return nil, err
			}
			logr.FromContextOrDiscard(ctx).Error(err, "Using the previous static ingest token index")
		}
		namespaces = a.lookup(hash)
	}
	return namespaces, nil
}

// lookup returns the namespaces of the static token with this hash. a.indexMu
// must be held.
//
// The index is keyed by SHA-256 digests, so the comparison's timing can at
// most reveal a prefix of a digest, which says nothing about the token: the
// lookup is constant-time with respect to the tokens themselves.
func (a *KubeAuthenticator) lookup(hash tokenHash) []string {
	return a.index[hash]
}

// listTokenSecrets lists the labelled Secrets of every namespace served.
func (a *KubeAuthenticator) listTokenSecrets(ctx context.Context) ([]corev1.Secret, error) {
	sel := client.MatchingLabels{LabelIngestToken: "true"}
	if len(a.namespaces) == 0 {
		var list corev1.SecretList
		if err := a.secrets.List(ctx, &list, sel); err != nil {
			return nil, fmt.Errorf("listing ingest token Secrets: %w", err)
		}
		return list.Items, nil
	}
	var items []corev1.Secret
	for _, ns := range a.namespaces {
		var list corev1.SecretList
		if err := a.secrets.List(ctx, &list, sel, client.InNamespace(ns)); err != nil {
			return nil, fmt.Errorf("listing ingest token Secrets in namespace %q: %w", ns, err)
		}
		items = append(items, list.Items...)
	}
	return items, nil
}

// rebuildIndex lists the labelled Secrets of every namespace served. a.indexMu
// must be held.
func (a *KubeAuthenticator) rebuildIndex(ctx context.Context) error {
	items, err := a.listTokenSecrets(ctx)
	if err != nil {
		return err
	}
	log := logr.FromContextOrDiscard(ctx)
	index := make(map[tokenHash][]string, len(items))
	for i := range items {
		s := &items[i]
		token := strings.TrimSpace(string(s.Data[IngestTokenKey]))
		if len(token) < MinStaticTokenBytes {
			log.V(1).Info("Ignoring ingest token Secret without a usable token", "secret", klog.KObj(s),
				"key", IngestTokenKey, "minBytes", MinStaticTokenBytes)
			continue
		}
		h := sha256.Sum256([]byte(token))
		if !slices.Contains(index[h], s.Namespace) {
			index[h] = append(index[h], s.Namespace)
		}
	}
	a.index = index
	a.indexBuilt = a.now()
	return nil
}
