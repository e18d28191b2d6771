package ui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ac "github.com/wablast/webhook-operator/api/applyconfiguration/api/v1alpha1"
	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/actions"
	"github.com/wablast/webhook-operator/internal/deliverylog"
	"github.com/wablast/webhook-operator/internal/signing"
)

// maxBodyBytes bounds a request body of the page's API.
const maxBodyBytes = 64 << 10

// recentDeliveries is how many deliveries the deliveries panel lists.
const recentDeliveries = 20

// generatedSecretSuffix names the Secret a new resource's secret is
// stored in: "<name>-webhook-secret", as the contract's example names it.
const generatedSecretSuffix = "-webhook-secret"

// errorBody is the JSON of a failed API call: the message to show, and the
// API server's validation errors, each with the form field it concerns.
type errorBody struct {
	Message string       `json:"message"`
	Fields  []fieldError `json:"fields,omitempty"`
}

// fieldError is one validation error: Field is the form field (one of
// formFields) or "" when none fits, Path the API server's field path.
type fieldError struct {
	Field   string `json:"field"`
	Path    string `json:"path"`
	Message string `json:"message"`
}

// formFields are the fields of the form, by the API field path each edits.
var formFields = []string{
	"metadata.name", "spec.url", "spec.events", "spec.enabled", "spec.paused",
	"spec.delivery.timeoutSeconds", "spec.delivery.maxAttempts", "spec.delivery.initialBackoffSeconds",
	"spec.delivery.maxBackoffSeconds", "spec.delivery.maxAgeSeconds", "spec.delivery.maxInFlight",
	"secret",
}

// indexSuffix matches list indexes and map keys in a field path.
var indexSuffix = regexp.MustCompile(`\[[^\]]*\]`)

// formField returns the form field an API field path (such as
// "spec.events[2]") concerns, or "" when none does. A message of a rule on
// the whole spec that names a delivery field goes beside that field.
func formField(path, message string) string {
	p := indexSuffix.ReplaceAllString(path, "")
	for p != "" {
		for _, f := range formFields {
			if p == f {
				return f
			}
		}
		i := strings.LastIndexByte(p, '.')
		if i < 0 {
			break
		}
		p = p[:i]
	}
	if path == "spec" || path == "" {
		for _, f := range formFields {
			if name, ok := strings.CutPrefix(f, "spec."); ok && strings.HasPrefix(name, "delivery.") && strings.Contains(message, name) {
				return f
			}
		}
	}
	return ""
}

// writeJSON answers code with v as JSON.
func writeJSON(w http.ResponseWriter, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "encoding the answer: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(data, '\n')) // the client went away: nowhere to report it
}

// writeError answers with err: the API server's status code and message
// (explained where internal/actions explains it) and its field causes, 502
// for an error that did not come from the API server. It logs the method,
// path and status, never a body.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusBadGateway
	body := errorBody{Message: err.Error()}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		st := status.Status()
		if st.Code >= 400 && st.Code < 600 {
			code = int(st.Code)
		}
		if st.Details != nil {
			for _, c := range st.Details.Causes {
				body.Fields = append(body.Fields, fieldError{Field: formField(c.Field, c.Message), Path: c.Field, Message: c.Message})
			}
		}
	}
	if errors.Is(err, context.Canceled) {
		code = http.StatusServiceUnavailable
	}
	fmt.Fprintf(s.errLog, "%s %s: %d\n", r.Method, r.URL.Path, code)
	writeJSON(w, code, body)
}

// badRequest answers 400 with msg.
func badRequest(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusBadRequest, errorBody{Message: msg})
}

// decode reads r's JSON body into v; it answers 400 and returns false when
// it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		badRequest(w, "the request body is not the JSON expected: "+err.Error())
		return false
	}
	return true
}

// get reads WebhookConfig name, with the error explained.
func (s *Server) get(ctx context.Context, name string) (*webhooksv1alpha1.WebhookConfig, error) {
	var whc webhooksv1alpha1.WebhookConfig
	if err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: name}, &whc); err != nil {
		return nil, actions.ExplainWebhookConfigError(err, "get", s.namespace, name)
	}
	return &whc, nil
}

// list reads every WebhookConfig of the namespace, sorted by name.
func (s *Server) list(ctx context.Context) (*webhooksv1alpha1.WebhookConfigList, []webhookView, error) {
	var list webhooksv1alpha1.WebhookConfigList
	if err := s.client.List(ctx, &list, client.InNamespace(s.namespace)); err != nil {
		return nil, nil, actions.ExplainAccessError(err, "list", "webhookconfigs.webhooks.wablast.io", s.namespace, "webhookconfigs")
	}
	views := make([]webhookView, 0, len(list.Items))
	for i := range list.Items {
		views = append(views, newView(&list.Items[i]))
	}
	return &list, views, nil
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	_, views, err := s.list(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, views)
}

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	whc, err := s.get(r.Context(), r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, newView(whc))
}

// applyRequest is the form as the page sends it.
type applyRequest struct {
	// Name is the new resource's name (create only; an update names it in
	// the path).
	Name      string   `json:"name"`
	URL       string   `json:"url"`
	Events    []string `json:"events"`
	AllEvents bool     `json:"allEvents"`
	Enabled   bool     `json:"enabled"`
	Paused    bool     `json:"paused"`
	// Delivery's fields are left to their defaults when null.
	Delivery struct {
		TimeoutSeconds        *int32 `json:"timeoutSeconds"`
		MaxAttempts           *int32 `json:"maxAttempts"`
		InitialBackoffSeconds *int32 `json:"initialBackoffSeconds"`
		MaxBackoffSeconds     *int32 `json:"maxBackoffSeconds"`
		MaxAgeSeconds         *int32 `json:"maxAgeSeconds"`
		MaxInFlight           *int32 `json:"maxInFlight"`
	} `json:"delivery"`
	// Secret, for a new resource only, is stored in the Secret
	// "<name>-webhook-secret" that spec.secretRef then names; empty lets the
	// operator generate one.
	Secret string `json:"secret"`
}

// applyConfiguration is the WebhookConfig req describes, with secretRef ref
// (nil for none).
func (s *Server) applyConfiguration(name string, req *applyRequest, ref *webhooksv1alpha1.SecretKeyReference) *ac.WebhookConfigApplyConfiguration {
	spec := ac.WebhookConfigSpec().WithURL(req.URL).WithEnabled(req.Enabled).WithPaused(req.Paused)
	if req.AllEvents {
		spec.WithEvents(webhooksv1alpha1.EventTypeAll)
	} else {
		// An empty list is sent as such, so the API server says it is empty.
		spec.Events = make([]webhooksv1alpha1.EventType, 0, len(req.Events))
		for _, e := range req.Events {
			spec.Events = append(spec.Events, webhooksv1alpha1.EventType(e))
		}
	}
	d := ac.DeliveryPolicy()
	rd := &req.Delivery
	for _, f := range []struct {
		v   *int32
		set func(int32) *ac.DeliveryPolicyApplyConfiguration
	}{
		{rd.TimeoutSeconds, d.WithTimeoutSeconds}, {rd.MaxAttempts, d.WithMaxAttempts},
		{rd.InitialBackoffSeconds, d.WithInitialBackoffSeconds}, {rd.MaxBackoffSeconds, d.WithMaxBackoffSeconds},
		{rd.MaxAgeSeconds, d.WithMaxAgeSeconds}, {rd.MaxInFlight, d.WithMaxInFlight},
	} {
		if f.v != nil {
			f.set(*f.v)
		}
	}
	spec.WithDelivery(d)
	if ref != nil {
		r := ac.SecretKeyReference().WithName(ref.Name)
		if ref.Key != "" {
			r.WithKey(ref.Key)
		}
		spec.WithSecretRef(r)
	}
	return ac.WebhookConfig(name, s.namespace).WithSpec(spec)
}

// apply server-side applies a under FieldManager, taking over the fields
// another manager (kubectl apply, a GitOps tool) set: saving the form is
// the user's explicit choice of these values.
func (s *Server) apply(ctx context.Context, a *ac.WebhookConfigApplyConfiguration) (*webhooksv1alpha1.WebhookConfig, error) {
	if err := s.client.Apply(ctx, a, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return nil, err
	}
	return s.get(ctx, *a.Name)
}

// handleCreate creates a WebhookConfig from the form, and its Secret when
// the form carries a secret.
func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req applyRequest
	if !decode(w, r, &req) {
		return
	}
	ctx := r.Context()
	if req.Name == "" {
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Message: "a name is required",
			Fields: []fieldError{{Field: "metadata.name", Path: "metadata.name", Message: "Required value: a name is required"}}})
		return
	}
	var existing webhooksv1alpha1.WebhookConfig
	err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: req.Name}, &existing)
	switch {
	case err == nil:
		msg := fmt.Sprintf("a WebhookConfig named %q already exists in namespace %q", req.Name, s.namespace)
		writeJSON(w, http.StatusConflict, errorBody{Message: msg, Fields: []fieldError{{Field: "metadata.name", Path: "metadata.name", Message: msg}}})
		return
	case !apierrors.IsNotFound(err):
		s.writeError(w, r, actions.ExplainWebhookConfigError(err, "get", s.namespace, req.Name))
		return
	}
	var ref *webhooksv1alpha1.SecretKeyReference
	secretName := req.Name + generatedSecretSuffix
	if req.Secret != "" {
		if _, err := signing.ParseSecret(req.Secret); err != nil {
			// The error names what is wrong, never the secret.
			writeJSON(w, http.StatusUnprocessableEntity, errorBody{Message: "the secret is not usable",
				Fields: []fieldError{{Field: "secret", Path: "secret", Message: err.Error()}}})
			return
		}
		var sec corev1.Secret
		err := s.client.Get(ctx, client.ObjectKey{Namespace: s.namespace, Name: secretName}, &sec)
		switch {
		case err == nil:
			msg := fmt.Sprintf("a Secret named %q already exists in namespace %q: leave the secret empty, or delete that Secret", secretName, s.namespace)
			writeJSON(w, http.StatusConflict, errorBody{Message: msg, Fields: []fieldError{{Field: "secret", Path: "secret", Message: msg}}})
			return
		case !apierrors.IsNotFound(err):
			s.writeError(w, r, actions.ExplainAccessError(err, "get", "secrets", s.namespace, fmt.Sprintf("secret %q", secretName)))
			return
		}
		ref = &webhooksv1alpha1.SecretKeyReference{Name: secretName, Key: webhooksv1alpha1.DefaultSecretKey}
	}
	whc, err := s.apply(ctx, s.applyConfiguration(req.Name, &req, ref))
	if err != nil {
		s.writeError(w, r, explainSave(err, "create", s.namespace))
		return
	}
	if ref != nil {
		// Owned by the WebhookConfig, so deleting it deletes the Secret. Until
		// the Secret exists the resource is Ready=False, and it recovers by
		// itself when the Secret appears.
		sec := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{
				Name: secretName, Namespace: s.namespace,
				Labels: map[string]string{"app.kubernetes.io/managed-by": FieldManager},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: webhooksv1alpha1.GroupVersion.String(), Kind: "WebhookConfig",
					Name: whc.Name, UID: whc.UID, BlockOwnerDeletion: ptr.To(false),
				}},
			},
			Type:       corev1.SecretTypeOpaque,
			StringData: map[string]string{webhooksv1alpha1.DefaultSecretKey: req.Secret},
		}
		if err := s.client.Create(ctx, sec); err != nil {
			err = actions.ExplainAccessError(err, "create", "secrets", s.namespace, fmt.Sprintf("secret %q", secretName))
			s.writeError(w, r, fmt.Errorf("the WebhookConfig was saved, but not its Secret %q (create it with the secret under key %q): %w",
				secretName, webhooksv1alpha1.DefaultSecretKey, err))
			return
		}
	}
	writeJSON(w, http.StatusOK, newView(whc))
}

// handleUpdate applies the form to an existing WebhookConfig; its
// spec.secretRef is kept.
func (s *Server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	var req applyRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("name")
	if req.Secret != "" {
		badRequest(w, "the secret of an existing WebhookConfig is changed by rotating it")
		return
	}
	ctx := r.Context()
	current, err := s.get(ctx, name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	whc, err := s.apply(ctx, s.applyConfiguration(name, &req, current.Spec.SecretRef))
	if err != nil {
		s.writeError(w, r, explainSave(err, "patch", s.namespace))
		return
	}
	writeJSON(w, http.StatusOK, newView(whc))
}

// explainSave explains a refused save; a validation error stays the API
// server's, whose causes go beside the fields.
func explainSave(err error, verb, ns string) error {
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
		return actions.ExplainAccessError(err, verb, "webhookconfigs.webhooks.wablast.io", ns, "webhookconfigs")
	}
	return err
}

// handleTest requests a test delivery, as "kubectl webhook test" does, and
// answers the token status.lastTest.requestedAt will hold.
func (s *Server) handleTest(w http.ResponseWriter, r *http.Request) {
	token, err := actions.RequestTest(r.Context(), s.client, client.ObjectKey{Namespace: s.namespace, Name: r.PathValue("name")}, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"token": token})
}

// handleShowSecret answers every signing secret that still signs, newest
// first, as "kubectl webhook secret --all" prints them. It is a POST: the
// values leave the API server only on this explicit, CSRF-checked request.
func (s *Server) handleShowSecret(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	whc, err := s.get(ctx, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	secrets, err := actions.SigningSecrets(ctx, s.client, whc, true, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ref := actions.SigningSecretRef(whc)
	writeJSON(w, http.StatusOK, map[string]any{"secrets": secrets, "secretRef": secretRef{Name: ref.Name, Key: ref.Key}})
}

// rotateRequest is the grace period of a rotation, as a Go duration
// ("24h", "0s").
type rotateRequest struct {
	Grace string `json:"grace"`
}

// handleRotate rotates the signing secret, as "kubectl webhook
// rotate-secret" does. It answers when the grace period ends, not the secret.
func (s *Server) handleRotate(w http.ResponseWriter, r *http.Request) {
	var req rotateRequest
	if !decode(w, r, &req) {
		return
	}
	grace := actions.DefaultRotationGrace
	if req.Grace != "" {
		d, err := time.ParseDuration(req.Grace)
		if err != nil || d < 0 {
			writeJSON(w, http.StatusUnprocessableEntity, errorBody{Message: fmt.Sprintf("the grace period %q is not a duration such as 24h, 90m or 0s", req.Grace)})
			return
		}
		grace = d
	}
	ctx := r.Context()
	whc, err := s.get(ctx, r.PathValue("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rot, err := actions.RotateSecret(ctx, s.client, whc, grace, s.now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"secret": rot.Secret, "endsAt": rot.EndsAt})
}

// handleGenerateSecret answers a new Standard Webhooks secret for the form
// of a new resource; nothing is stored until the form is saved.
func (s *Server) handleGenerateSecret(w http.ResponseWriter, r *http.Request) {
	secret, err := signing.GenerateSecret()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"secret": secret})
}

// deliveriesBody answers the deliveries panel: Available false and a
// Message when the delivery log cannot be read, so the panel says why
// instead of the page failing.
type deliveriesBody struct {
	Available  bool                               `json:"available"`
	Message    string                             `json:"message,omitempty"`
	Deliveries []deliveryv1alpha1.WebhookDelivery `json:"deliveries"`
}

// handleDeliveries lists the newest deliveries of one WebhookConfig from
// the delivery log API (delivery.wablast.io), as "kubectl webhook
// deliveries" reads it.
func (s *Server) handleDeliveries(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var list deliveryv1alpha1.WebhookDeliveryList
	err := s.client.List(r.Context(), &list, client.InNamespace(s.namespace),
		client.MatchingFields{"spec.webhook": name}, client.Limit(recentDeliveries))
	if err != nil {
		if msg, ok := deliveryLogUnavailable(err, s.namespace); ok {
			writeJSON(w, http.StatusOK, deliveriesBody{Message: msg, Deliveries: []deliveryv1alpha1.WebhookDelivery{}})
			return
		}
		s.writeError(w, r, err)
		return
	}
	for i := range list.Items {
		// The page shows attempts, not bodies.
		list.Items[i].Spec.Envelope = ""
		list.Items[i].ManagedFields = nil
	}
	if list.Items == nil {
		list.Items = []deliveryv1alpha1.WebhookDelivery{}
	}
	writeJSON(w, http.StatusOK, deliveriesBody{Available: true, Deliveries: list.Items})
}

// deliveryLogUnavailable says why the delivery log cannot be read, and
// true, when err means the API is not served, not reachable, or not
// allowed; false for any other error.
func deliveryLogUnavailable(err error, ns string) (string, bool) {
	switch {
	case meta.IsNoMatchError(err) || apierrors.IsNotFound(err):
		return "The delivery log API (delivery.wablast.io) is not served in this cluster: is the operator installed with its APIService? (" + err.Error() + ")", true
	case apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err):
		return "The delivery log API (delivery.wablast.io) is not available right now: is the operator running? (" + err.Error() + ")", true
	case apierrors.IsForbidden(err):
		return fmt.Sprintf("You may not read the delivery log (webhookdeliveries.delivery.wablast.io) in namespace %s; the \"view\" role grants it. (%v)", ns, err), true
	}
	return "", false
}

// resendRequest names the event to deliver again.
type resendRequest struct {
	EventID string `json:"eventID"`
}

// handleResend delivers one event again to the WebhookConfig's endpoint
// with its original webhook-id: the resend subresource of its delivery, as
// "kubectl webhook resend" creates it.
func (s *Server) handleResend(w http.ResponseWriter, r *http.Request) {
	var req resendRequest
	if !decode(w, r, &req) {
		return
	}
	if req.EventID == "" {
		badRequest(w, "an eventID is required")
		return
	}
	d := &deliveryv1alpha1.WebhookDelivery{}
	d.Namespace, d.Name = s.namespace, deliverylog.Name(r.PathValue("name"), req.EventID)
	res := &deliveryv1alpha1.WebhookDeliveryResend{}
	if err := s.client.SubResource("resend").Create(r.Context(), d, res); err != nil {
		if apierrors.IsForbidden(err) {
			err = actions.ExplainAccessError(err, "create", "webhookdeliveries/resend", s.namespace, "a resend")
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}
