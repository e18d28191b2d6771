package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/delivery"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/status"
)

// secretNameIndex indexes WebhookConfigs by the name of the Secret they read
// their signing secret from (spec.secretRef.name or "<name>-signing").
const secretNameIndex = "webhooks.wablast.io/secret-name"

// WebhookConfigReconciler resolves each WebhookConfig (URL, signing secret,
// events, policy) and keeps the dispatcher's registry in step with it. It
// never delivers anything itself.
type WebhookConfigReconciler struct {
	client.Client
	// SecretReader reads signing Secrets. It must not be backed by the
	// manager's cache, which would then hold the values of every Secret: the
	// controller watches Secrets as metadata only and keeps just the keys
	// WebhookConfigs name (secretValues). nil means the manager's API reader
	// (mgr.GetAPIReader()).
	SecretReader client.Reader
	// SecretMetadata reads Secrets' metadata (PartialObjectMetadata): a
	// Secret whose resourceVersion there is the one last read is not read
	// again. nil means the manager's cache, which the Secret watch fills.
	SecretMetadata client.Reader
	Registry       endpoint.Registry
	Recorder       events.EventRecorder
	// GenerateSecret makes the value of a generated signing Secret.
	// Defaults to signing.GenerateSecret.
	GenerateSecret func() (string, error)
	// Actions runs the test deliveries and replays the annotations ask for;
	// nil ignores the annotations.
	Actions Actions
	// IsLeader reports whether this replica is the leader. Every replica
	// reconciles to keep its own registry current, but only the leader writes
	// status, creates Secrets, records Events and runs actions. nil means
	// always the leader.
	IsLeader func() bool
	// Now is the clock rotations end by; nil means time.Now.
	Now func() time.Time

	secrets secretValues
}

func (r *WebhookConfigReconciler) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// rotationKeys returns the keys that sign at now, given the signing
// Secret's annotations: every key while a rotation's grace period runs
// (until the time in AnnotationRotationEndsAt), the first (the newest) only
// once it ended; and the end while it is ahead, zero otherwise. A value that
// is not an RFC 3339 time is ignored: every key signs, as without it.
func rotationKeys(keys [][]byte, annotations map[string]string, now time.Time) ([][]byte, time.Time) {
	v, ok := annotations[webhooksv1alpha1.AnnotationRotationEndsAt]
	if !ok || len(keys) < 2 {
		return keys, time.Time{}
	}
	end, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return keys, time.Time{}
	}
	if !now.Before(end) {
		return keys[:1], time.Time{}
	}
	return keys, end
}

func (r *WebhookConfigReconciler) leader() bool { return r.IsLeader == nil || r.IsLeader() }

// Actions is what the controller asks of the dispatcher for the
// test-requested-at and replay-since annotations. Both run in the background,
// record their outcome in status, and ignore a token already handled.
type Actions interface {
	RequestTest(delivery.TestRequest)
	RequestReplay(delivery.ReplayRequest)
	// Forget drops the pending, scheduled and failed deliveries kept for a
	// deleted resource.
	Forget(types.NamespacedName)
}

// +kubebuilder:rbac:groups=webhooks.wablast.io,resources=webhookconfigs,verbs=get;list;watch
// +kubebuilder:rbac:groups=webhooks.wablast.io,resources=webhookconfigs/status,verbs=get;update;patch
// Secrets: get (uncached reads of the signing Secrets WebhookConfigs name),
// list and watch (their metadata only, to notice changes), create (generated
// signing Secrets).
//
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// SetupWithManager registers the controller, its Secret index and the
// registry warm-up with mgr.
func (r *WebhookConfigReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager, opts controller.Options) error {
	if r.GenerateSecret == nil {
		r.GenerateSecret = signing.GenerateSecret
	}
	if r.SecretReader == nil {
		r.SecretReader = mgr.GetAPIReader()
	}
	if r.SecretMetadata == nil {
		r.SecretMetadata = mgr.GetCache()
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &webhooksv1alpha1.WebhookConfig{}, secretNameIndex,
		func(o client.Object) []string {
			return []string{o.(*webhooksv1alpha1.WebhookConfig).SigningSecretRef().Name}
		}); err != nil {
		return fmt.Errorf("indexing WebhookConfigs by Secret name: %w", err)
	}
	if err := mgr.Add(&registryWarmer{reconciler: r, cache: mgr.GetCache()}); err != nil {
		return fmt.Errorf("adding registry warm-up: %w", err)
	}
	if err := mgr.Add(&leaderCatchUp{reconciler: r, cache: mgr.GetCache()}); err != nil {
		return fmt.Errorf("adding leader catch-up: %w", err)
	}
	// Every replica reconciles (its registry must follow the resources); the
	// leader alone writes.
	opts.NeedLeaderElection = ptr.To(false)
	return ctrl.NewControllerManagedBy(mgr).
		For(&webhooksv1alpha1.WebhookConfig{}, builder.WithPredicates(
			predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))).
		// Metadata only: the cache holds the names of the cluster's Secrets,
		// never their values; resolve reads the one it needs.
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.requestsForSecret)).
		WithOptions(opts).
		Named("webhookconfig").
		Complete(r)
}

// requestsForSecret maps a Secret to the WebhookConfigs of its namespace that read it.
func (r *WebhookConfigReconciler) requestsForSecret(ctx context.Context, o client.Object) []ctrl.Request {
	var list webhooksv1alpha1.WebhookConfigList
	if err := r.List(ctx, &list, client.InNamespace(o.GetNamespace()),
		client.MatchingFields{secretNameIndex: o.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "Listing WebhookConfigs for Secret", "secret", klog.KObj(o))
		return nil
	}
	reqs := make([]ctrl.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}

// Reconcile brings the registry and the resource's status in line with the
// resource. A configuration problem (a missing or unusable Secret) makes the
// resource Stalled and is not retried: a change to the Secret triggers the
// next reconcile. A returned error means a transient API failure, retried
// with backoff.
func (r *WebhookConfigReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)

	var whc webhooksv1alpha1.WebhookConfig
	if err := r.Get(ctx, req.NamespacedName, &whc); err != nil {
		if apierrors.IsNotFound(err) {
			r.Registry.Remove(req.NamespacedName)
			endpoint.ForgetFilterMetrics(req.Namespace, req.Name)
			endpoint.ForgetOrderingMetrics(req.Namespace, req.Name)
			if r.Actions != nil && r.leader() {
				// Deleted: what was kept for it can never be delivered.
				r.Actions.Forget(req.NamespacedName)
			}
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if !whc.DeletionTimestamp.IsZero() {
		r.Registry.Remove(req.NamespacedName)
		return ctrl.Result{}, nil
	}

	leader := r.leader()
	ep, ref, rotationEnd, cfgErr, err := r.resolve(ctx, &whc, leader)
	if err != nil {
		return ctrl.Result{}, err
	}
	// During a rotation, reconcile again when it ends, to drop the old keys.
	var result ctrl.Result
	desired := controllerStatus{
		observedGeneration: whc.Generation,
		secretRef:          ref,
		conditions:         ownConditions(whc.Status.Conditions),
	}
	if !rotationEnd.IsZero() && cfgErr == nil {
		result.RequeueAfter = rotationEnd.Sub(r.now()) + 100*time.Millisecond
		end := metav1.NewTime(rotationEnd)
		desired.rotationEndsAt = &end
	}
	if cfgErr != nil {
		r.unregister(req.NamespacedName, &whc, &ep, cfgErr)
		desired.active = false
		meta.SetStatusCondition(&desired.conditions, metav1.Condition{
			Type: webhooksv1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: cfgErr.reason,
			Message: cfgErr.message, ObservedGeneration: whc.Generation,
		})
		meta.SetStatusCondition(&desired.conditions, metav1.Condition{
			Type: webhooksv1alpha1.ConditionStalled, Status: metav1.ConditionTrue, Reason: cfgErr.reason,
			Message: cfgErr.message, ObservedGeneration: whc.Generation,
		})
	} else {
		if ep.Enabled {
			r.Registry.Upsert(ep)
		} else {
			r.Registry.Remove(req.NamespacedName)
		}
		desired.active = ep.Enabled && !ep.Paused
		msg := "The endpoint is live in the dispatcher"
		switch {
		case !ep.Enabled:
			msg = "The endpoint is accepted and disabled (spec.enabled is false)"
		case ep.Paused:
			msg = "The endpoint is live and paused (spec.paused is true): its events are kept, nothing is sent"
		}
		meta.SetStatusCondition(&desired.conditions, metav1.Condition{
			Type: webhooksv1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: webhooksv1alpha1.ReasonSucceeded,
			Message: msg, ObservedGeneration: whc.Generation,
		})
		meta.RemoveStatusCondition(&desired.conditions, webhooksv1alpha1.ConditionStalled)
	}
	meta.RemoveStatusCondition(&desired.conditions, webhooksv1alpha1.ConditionReconciling)

	if !leader {
		return result, nil
	}
	r.recordTransition(&whc, desired.conditions)
	r.requestActions(&whc, &ep, cfgErr)

	if desired.equalTo(&whc.Status) {
		return result, nil
	}
	if err := status.Apply(ctx, r.Client, status.Controller(&whc, desired.observedGeneration, desired.active, desired.secretRef, desired.rotationEndsAt, desired.conditions), status.ControllerFieldManager); err != nil {
		if apierrors.IsNotFound(err) {
			r.Registry.Remove(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, fmt.Errorf("applying status: %w", err)
	}
	logger.V(1).Info("Status updated", "ready", meta.IsStatusConditionTrue(desired.conditions, webhooksv1alpha1.ConditionReady), "active", desired.active)
	return result, nil
}

// unregister takes the resource out of the registry because of cfgErr, but
// for an invalid filter: then the registration of an earlier generation, if
// the registry holds one, stays live (with the signing keys just resolved,
// in ep), so that a typo in a filter does not stop the deliveries that the
// last good configuration made. cfgErr's message says which happened.
func (r *WebhookConfigReconciler) unregister(key types.NamespacedName, whc *webhooksv1alpha1.WebhookConfig, ep *endpoint.Endpoint, cfgErr *configError) {
	if cfgErr.reason == webhooksv1alpha1.ReasonInvalidFilter || cfgErr.reason == webhooksv1alpha1.ReasonInvalidOrderingKey {
		if prev, ok := r.Registry.Get(key); ok && prev.UID == whc.UID {
			if len(ep.Keys) > 0 {
				prev.Keys = ep.Keys
			}
			r.Registry.Upsert(prev)
			cfgErr.message += fmt.Sprintf("; the endpoint keeps the configuration of generation %d until it is fixed", prev.Generation)
			return
		}
		cfgErr.message += "; the endpoint is not registered (no events are kept for it) until it is fixed"
	}
	r.Registry.Remove(key)
}

// requestActions hands a new test-requested-at or replay-since annotation
// value to the dispatcher. A value already echoed in status was handled,
// before a restart too, and is not acted on again.
func (r *WebhookConfigReconciler) requestActions(whc *webhooksv1alpha1.WebhookConfig, ep *endpoint.Endpoint, cfgErr *configError) {
	if r.Actions == nil {
		return
	}
	if tok := whc.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt]; tok != "" &&
		(whc.Status.LastTest == nil || whc.Status.LastTest.RequestedAt != tok) {
		req := delivery.TestRequest{Namespace: whc.Namespace, Name: whc.Name, UID: whc.UID, Token: tok}
		if cfgErr != nil {
			req.NotReady = cfgErr.Error()
		} else {
			cp := *ep
			req.Endpoint = &cp
		}
		r.Actions.RequestTest(req)
	}
	if tok := whc.Annotations[webhooksv1alpha1.AnnotationReplaySince]; tok != "" &&
		(whc.Status.LastReplay == nil || whc.Status.LastReplay.RequestedAt != tok) {
		req := delivery.ReplayRequest{Namespace: whc.Namespace, Name: whc.Name, UID: whc.UID, Token: tok}
		if since, err := time.Parse(time.RFC3339, tok); err == nil {
			req.Since = since
		}
		r.Actions.RequestReplay(req)
	}
}

// recordTransition emits a Kubernetes Event when the Ready condition changes
// status or reason, and only then.
func (r *WebhookConfigReconciler) recordTransition(whc *webhooksv1alpha1.WebhookConfig, desired []metav1.Condition) {
	if r.Recorder == nil {
		return
	}
	before := meta.FindStatusCondition(whc.Status.Conditions, webhooksv1alpha1.ConditionReady)
	after := meta.FindStatusCondition(desired, webhooksv1alpha1.ConditionReady)
	if after == nil || (before != nil && before.Status == after.Status && before.Reason == after.Reason) {
		return
	}
	eventType := corev1.EventTypeNormal
	if after.Status != metav1.ConditionTrue {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(whc, nil, eventType, after.Reason, "Reconcile", "%s", after.Message)
}

// configError is a problem with the resource's configuration that only a
// change by the user can fix.
type configError struct {
	reason  string
	message string
}

func (e *configError) Error() string { return e.reason + ": " + e.message }

// resolve turns the resource into a registry Endpoint. It returns a
// configError for problems the user must fix and an error for transient
// failures. With mayCreate, a missing generated Secret is created.
//
// During a secret rotation it also returns when the rotation ends (zero
// otherwise): until then every secret in the key signs, then the first.
func (r *WebhookConfigReconciler) resolve(ctx context.Context, whc *webhooksv1alpha1.WebhookConfig, mayCreate bool) (endpoint.Endpoint, webhooksv1alpha1.SecretKeyReference, time.Time, *configError, error) {
	var none time.Time
	ref := whc.SigningSecretRef()
	generated := whc.Spec.SecretRef == nil
	key := types.NamespacedName{Namespace: whc.Namespace, Name: ref.Name}

	secret, err := r.secrets.get(ctx, r.SecretMetadata, r.SecretReader, key, ref.Key)
	switch {
	case apierrors.IsNotFound(err) && generated && mayCreate:
		created, cerr := r.createGeneratedSecret(ctx, whc, ref)
		if cerr != nil {
			return endpoint.Endpoint{}, ref, none, nil, cerr
		}
		r.secrets.remember(key, created, ref.Key)
		secret = created
	case apierrors.IsNotFound(err):
		return endpoint.Endpoint{}, ref, none, &configError{webhooksv1alpha1.ReasonSecretNotFound,
			fmt.Sprintf("Secret %q not found in namespace %q", ref.Name, whc.Namespace)}, nil
	case err != nil:
		return endpoint.Endpoint{}, ref, none, nil, fmt.Errorf("reading Secret %s: %w", key, err)
	}

	if generated && !metav1.IsControlledBy(secret, whc) {
		return endpoint.Endpoint{}, ref, none, &configError{webhooksv1alpha1.ReasonSecretConflict,
			fmt.Sprintf("Secret %q exists and is not owned by this WebhookConfig; set spec.secretRef to use it, or delete it to have one generated", ref.Name)}, nil
	}
	value, ok := secret.Data[ref.Key]
	if !ok {
		return endpoint.Endpoint{}, ref, none, &configError{webhooksv1alpha1.ReasonSecretKeyMissing,
			fmt.Sprintf("Secret %q has no key %q", ref.Name, ref.Key)}, nil
	}
	keys, perr := signing.ParseSecrets(string(value))
	if perr != nil {
		reason := webhooksv1alpha1.ReasonSecretInvalid
		switch {
		case errors.Is(perr, signing.ErrSecretTooShort):
			reason = webhooksv1alpha1.ReasonSecretTooShort
		case errors.Is(perr, signing.ErrNoSecret):
			reason = webhooksv1alpha1.ReasonSecretKeyMissing
		}
		return endpoint.Endpoint{}, ref, none, &configError{reason,
			fmt.Sprintf("key %q of Secret %q is not a usable signing secret: %v", ref.Key, ref.Name, perr)}, nil
	}
	keys, rotationEnd := rotationKeys(keys, secret.Annotations, r.now())
	ep := EndpointFor(whc, keys)
	filter, ferr := r.filterFor(whc)
	if ferr != nil {
		// ep (without its filter) carries the keys for unregister.
		return ep, ref, rotationEnd, &configError{webhooksv1alpha1.ReasonInvalidFilter,
			"spec.filter is invalid: " + strings.TrimPrefix(ferr.Error(), endpoint.ErrFilterInvalid.Error()+": ")}, nil
	}
	ep.Filter = filter
	okey, kerr := r.orderingKeyFor(whc)
	if kerr != nil {
		return ep, ref, rotationEnd, &configError{webhooksv1alpha1.ReasonInvalidOrderingKey,
			"spec.delivery.orderingKey is invalid: " + strings.TrimPrefix(kerr.Error(), endpoint.ErrOrderingKeyInvalid.Error()+": ")}, nil
	}
	ep.OrderingKey = okey
	return ep, ref, rotationEnd, nil, nil
}

// orderingKeyFor returns spec.delivery.orderingKey compiled (the default
// one when omitted) for a PerKey resource, nil otherwise; like a filter,
// once per generation.
func (r *WebhookConfigReconciler) orderingKeyFor(whc *webhooksv1alpha1.WebhookConfig) (*endpoint.OrderingKey, error) {
	p := whc.Spec.Delivery
	if p == nil || p.Ordering != webhooksv1alpha1.OrderingPerKey {
		return nil, nil
	}
	expr := p.OrderingKey
	if expr == "" {
		expr = endpoint.DefaultOrderingKey
	}
	if prev, ok := r.Registry.Get(client.ObjectKeyFromObject(whc)); ok && prev.UID == whc.UID && prev.OrderingKey != nil && prev.OrderingKey.Source() == expr {
		return prev.OrderingKey, nil
	}
	return endpoint.CompileOrderingKey(whc.Namespace, whc.Name, expr)
}

// filterFor returns spec.filter compiled, nil without one. A filter is
// compiled once per generation: the one registered for the same resource
// and expression is reused.
func (r *WebhookConfigReconciler) filterFor(whc *webhooksv1alpha1.WebhookConfig) (*endpoint.Filter, error) {
	if whc.Spec.Filter == "" {
		return nil, nil
	}
	if prev, ok := r.Registry.Get(client.ObjectKeyFromObject(whc)); ok && prev.UID == whc.UID && prev.Filter != nil && prev.Filter.Source() == whc.Spec.Filter {
		return prev.Filter, nil
	}
	return endpoint.CompileFilter(whc.Namespace, whc.Name, whc.Spec.Filter)
}

// EndpointFor builds the registry entry of a resource whose keys are resolved.
func EndpointFor(whc *webhooksv1alpha1.WebhookConfig, keys [][]byte) endpoint.Endpoint {
	p := whc.Spec.Delivery
	if p == nil {
		p = &webhooksv1alpha1.DeliveryPolicy{}
	}
	events := make([]string, 0, len(whc.Spec.Events))
	for _, e := range whc.Spec.Events {
		events = append(events, string(e))
	}
	return endpoint.Endpoint{
		Namespace:  whc.Namespace,
		Name:       whc.Name,
		UID:        whc.UID,
		Generation: whc.Generation,
		URL:        whc.Spec.URL,
		Keys:       keys,
		Events:     events,
		Enabled:    whc.IsEnabled(),
		Paused:     whc.Spec.Paused,
		Policy: endpoint.Policy{
			Timeout:        seconds(p.TimeoutSeconds, 10),
			MaxAttempts:    int(orDefault(p.MaxAttempts, 10)),
			InitialBackoff: seconds(p.InitialBackoffSeconds, 5),
			MaxBackoff:     seconds(p.MaxBackoffSeconds, 21600),
			MaxAge:         seconds(p.MaxAgeSeconds, 259200),
			MaxInFlight:    int(orDefault(p.MaxInFlight, 16)),
			PerKey:         p.Ordering == webhooksv1alpha1.OrderingPerKey,
		},
	}
}

func orDefault(v, def int32) int32 {
	if v <= 0 {
		return def
	}
	return v
}

func seconds(v, def int32) time.Duration { return time.Duration(orDefault(v, def)) * time.Second }

// createGeneratedSecret creates "<name>-signing" with a fresh whsec_ secret,
// controlled by the resource so that it is garbage-collected with it.
func (r *WebhookConfigReconciler) createGeneratedSecret(ctx context.Context, whc *webhooksv1alpha1.WebhookConfig, ref webhooksv1alpha1.SecretKeyReference) (*corev1.Secret, error) {
	value, err := r.GenerateSecret()
	if err != nil {
		return nil, fmt.Errorf("generating signing secret: %w", err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      ref.Name,
			Namespace: whc.Namespace,
			Labels:    map[string]string{"app.kubernetes.io/managed-by": "webhook-operator", "webhooks.wablast.io/webhookconfig": whc.Name},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{ref.Key: []byte(value)},
	}
	if err := controllerutil.SetControllerReference(whc, secret, r.Scheme()); err != nil {
		return nil, fmt.Errorf("setting owner of generated Secret: %w", err)
	}
	if err := r.Create(ctx, secret); err != nil {
		// AlreadyExists means another writer was first: retry and read it.
		return nil, fmt.Errorf("creating generated Secret %s: %w", ref.Name, err)
	}
	if r.Recorder != nil {
		r.Recorder.Eventf(whc, secret, corev1.EventTypeNormal, "SecretGenerated", "Reconcile",
			"Generated signing Secret %q", ref.Name)
	}
	return secret, nil
}

// controllerStatus is the part of the status the controller owns.
type controllerStatus struct {
	observedGeneration int64
	active             bool
	secretRef          webhooksv1alpha1.SecretKeyReference
	rotationEndsAt     *metav1.Time
	conditions         []metav1.Condition
}

var controllerConditions = []string{webhooksv1alpha1.ConditionReady, webhooksv1alpha1.ConditionReconciling, webhooksv1alpha1.ConditionStalled}

// ownConditions copies the conditions the controller owns out of all conditions.
func ownConditions(all []metav1.Condition) []metav1.Condition {
	var out []metav1.Condition
	for _, c := range all {
		for _, t := range controllerConditions {
			if c.Type == t {
				out = append(out, c)
			}
		}
	}
	return out
}

func (s *controllerStatus) equalTo(cur *webhooksv1alpha1.WebhookConfigStatus) bool {
	return cur.ObservedGeneration == s.observedGeneration &&
		cur.Active == s.active &&
		cur.SecretRef != nil && *cur.SecretRef == s.secretRef &&
		equality.Semantic.DeepEqual(cur.SecretRotationEndsAt, s.rotationEndsAt) &&
		equality.Semantic.DeepEqual(ownConditions(cur.Conditions), s.conditions)
}
