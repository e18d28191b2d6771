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

	"golang.org/x/sync/singleflight"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
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

	// TokenAudience is the audience of the ServiceAccount tokens the
	// ingestion API accepts: a projected token requested for it is valid for
	// this API and for no other.
	TokenAudience = "webhooks.wablast.io"

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
	// decideTimeout bounds one decision. The decision is shared by every
	// request for the same token and namespace, so it does not end when
	// the request that started it does.
	decideTimeout = 10 * time.Second
)

type tokenHash = [sha256.Size]byte

type decisionKey struct {
	token     tokenHash
	namespace string
}

// flightKey is the key of the decision's singleflight call: the hash and
// the namespace (the hash has a fixed length, so no separator is needed).
func (k decisionKey) flightKey() string {
	return string(k.token[:]) + k.namespace
}

// decision is a cached decision.
type decision struct {
	err error // nil (allowed), or wrapping ErrUnauthenticated or ErrForbidden
}

// KubeAuthenticator authorizes bearer tokens against the cluster (CONTRACT
// section 4):
//
//   - A static token is the "token" key of a Secret labelled
//     webhooks.wablast.io/ingest-token: "true" (surrounding whitespace is
//     ignored; tokens shorter than MinStaticTokenBytes are ignored). It is
//     allowed in its Secret's namespace; in every other one it is refused
//     exactly as an unknown token is (ErrUnauthenticated, same message),
//     so the answer does not tell that it is valid elsewhere.
//   - A token shaped like a JWT (three segments of base64url) whose
//     payload claims the audience TokenAudience is a Kubernetes token: a
//     TokenReview for that audience must authenticate it (else
//     ErrUnauthenticated), then a SubjectAccessReview must allow its user
//     to create webhookevents.webhooks.wablast.io in the namespace (else
//     ErrForbidden).
//     With AcceptAPIServerTokens, a JWT that does not claim TokenAudience
//     is reviewed for the API server's own audiences instead.
//   - Any other token is refused (ErrUnauthenticated) without a review.
//
// Reviews are limited (KubeAuthOptions): a token bucket per client address
// (from the context, as the Server puts it there), one overall and a
// number running at once; over them Authorize returns a *RateLimitError
// and makes no review.
//
// Decisions, allow and deny, are cached per (SHA-256 of the token,
// namespace) for the TTL in an LRU cache of at most 10,000 decisions, and
// concurrent requests for the same uncached decision share one review
// (singleflight), so a revoked token or a removed RoleBinding can
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
	clock      clock.PassiveClock

	// decisions maps a decisionKey to its decision.
	decisions *cache.LRUExpireCache
	// flights makes one decision of concurrent requests for the same key.
	flights singleflight.Group
	// limiter bounds the reviews of tokens not yet decided.
	limiter *reviewLimiter
	// acceptAPIServerTokens is KubeAuthOptions.AcceptAPIServerTokens.
	acceptAPIServerTokens bool

	indexMu    sync.Mutex
	index      map[tokenHash][]string // static token hash -> namespaces
	indexBuilt time.Time
}

var _ Authenticator = (*KubeAuthenticator)(nil)

// KubeAuthOptions configure a KubeAuthenticator. Zero values take the
// defaults.
type KubeAuthOptions struct {
	// CacheTTL is how long decisions are cached, DefaultAuthCacheTTL when
	// <= 0; it is also the longest a static token index is used before it
	// is rebuilt.
	CacheTTL time.Duration
	// MaxConcurrentReviews is how many token reviews may run at once
	// (DefaultMaxConcurrentReviews when 0, no limit when negative).
	MaxConcurrentReviews int
	// ReviewRate and ReviewBurst are the token bucket of all reviews:
	// reviews a second and the burst (DefaultReviewRate and
	// DefaultReviewBurst when 0; a negative rate is no limit).
	ReviewRate  float64
	ReviewBurst int
	// ClientReviewRate and ClientReviewBurst are the token bucket of each
	// client address, an IPv6 client's /64 (DefaultClientReviewRate and
	// DefaultClientReviewBurst when 0; a negative rate is no limit).
	ClientReviewRate  float64
	ClientReviewBurst int
	// AcceptAPIServerTokens accepts ServiceAccount tokens issued for the API
	// server's own audience besides those for TokenAudience, for producers
	// that cannot request a projected token yet. Such a token is also a
	// credential for the whole API server, so the ingestion API (and anyone
	// who can read its traffic) holds more than it needs. Off by default.
	AcceptAPIServerTokens bool
}

// NewKubeAuthenticator returns an authenticator that reviews tokens with cs
// and lists static token Secrets, by their label, across all namespaces,
// through secrets. In the manager that is its API reader, not its cache: the
// cache would keep the value of every Secret in the cluster in memory, while
// the index keeps only SHA-256 hashes of the ingest tokens (rebuilt with one
// List at most every cache TTL).
// Give cs a client rate limit of its own: the reviews of unknown tokens
// should not starve the controller's requests.
func NewKubeAuthenticator(cs kubernetes.Interface, secrets client.Reader, opts KubeAuthOptions) *KubeAuthenticator {
	return newKubeAuthenticator(cs, secrets, opts, clock.RealClock{}, maxCachedDecisions)
}

// newKubeAuthenticator is NewKubeAuthenticator with a clock and a cap of
// the decision cache, for tests.
func newKubeAuthenticator(cs kubernetes.Interface, secrets client.Reader, opts KubeAuthOptions, clk clock.PassiveClock, maxDecisions int) *KubeAuthenticator {
	ttl := opts.CacheTTL
	if ttl <= 0 {
		ttl = DefaultAuthCacheTTL
	}
	return &KubeAuthenticator{
		clientset: cs,
		secrets:   secrets,
		ttl:       ttl,
		clock:     clk,
		decisions: cache.NewLRUExpireCacheWithClock(maxDecisions, clk),
		limiter:   newReviewLimiter(opts, clk),

		acceptAPIServerTokens: opts.AcceptAPIServerTokens,
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
	if d, ok := a.decisions.Get(key); ok {
		return d.(decision).err
	}
	// The decision runs on a context of its own, which keeps ctx's values
	// (the logger): a request that gives up does not fail the others
	// waiting for the same decision.
	flight := a.flights.DoChan(key.flightKey(), func() (any, error) {
		// A call for this key may have finished between the Get above and
		// this one starting.
		if d, ok := a.decisions.Get(key); ok {
			return nil, d.(decision).err
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), decideTimeout)
		defer cancel()
		final, err := a.decide(ctx, token, key)
		if final {
			a.decisions.Add(key, decision{err: err}, a.ttl)
		}
		return nil, err
	})
	select {
	case res := <-flight:
		return res.Err
	case <-ctx.Done():
		return fmt.Errorf("waiting for an authorization decision: %w", ctx.Err())
	}
}

// decide makes an uncached decision. final is true when the decision may
// be cached: it is an allow or a deny that a review of the token made.
// Tokens refused for their shape are not cached (refusing them again costs
// nothing, and caching them would let a flood of garbage evict the
// decisions of real tokens), nor are failures and refusals by the limits.
func (a *KubeAuthenticator) decide(ctx context.Context, token string, key decisionKey) (final bool, err error) {
	namespaces, err := a.staticNamespaces(ctx, key.token)
	if err != nil {
		return false, err
	}
	if namespaces != nil {
		if slices.Contains(namespaces, key.namespace) {
			return true, nil
		}
		// Refused as a token that is not valid at all: a 403 would confirm
		// to whoever holds it that the token is valid somewhere.
		return true, errInvalidToken
	}
	if !jwtShaped(token) {
		return false, errInvalidToken
	}
	// The audiences the token claims choose the review; the API server
	// checks the claim. A token for the API server itself is refused
	// without a review unless such tokens are accepted.
	var audiences []string
	switch {
	case claimsAudience(token, TokenAudience):
		audiences = []string{TokenAudience}
	case a.acceptAPIServerTokens:
		// nil: the API server's own audiences.
	default:
		return false, errInvalidToken
	}
	release, err := a.limiter.acquire(ctx)
	if err != nil {
		return false, err
	}
	defer release()
	err = a.review(ctx, token, audiences, key.namespace)
	return err == nil || errors.Is(err, ErrUnauthenticated) || errors.Is(err, ErrForbidden), err
}

// errInvalidToken is the answer to every token that is not valid: one
// message, whatever the reason, so that the answer tells nothing about the
// token.
var errInvalidToken = fmt.Errorf("%w: the token is neither a valid Kubernetes token nor a static ingest token", ErrUnauthenticated)

// review checks a Kubernetes token with a TokenReview for these audiences
// (nil: the API server's) and a SubjectAccessReview.
func (a *KubeAuthenticator) review(ctx context.Context, token string, audiences []string, namespace string) error {
	tr, err := a.clientset.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("reviewing the token: %w", err)
	}
	if !tr.Status.Authenticated {
		return errInvalidToken
	}
	// An authenticator that does not know audiences may authenticate the
	// token without checking them; the API server then leaves them out of
	// the status, and the token is not known to be meant for this API.
	for _, want := range audiences {
		if !slices.Contains(tr.Status.Audiences, want) {
			return errInvalidToken
		}
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
	age := a.clock.Now().Sub(a.indexBuilt)
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
	a.indexBuilt = a.clock.Now()
	return nil
}
