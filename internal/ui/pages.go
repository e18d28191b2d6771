package ui

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/catalog"
)

// exampleTimestamp is the envelope timestamp of the documented examples,
// as "kubectl webhook event-types" prints them.
const exampleTimestamp = "2026-11-28T10:15:02.123Z"

// parseTemplates parses the embedded page templates.
func parseTemplates() (*template.Template, error) {
	t, err := template.ParseFS(templateFiles, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("parsing the page templates: %w", err)
	}
	return t, nil
}

// pageData is what a page's template renders.
type pageData struct {
	// Page is "list", "new", "webhook" or "event-types".
	Page      string
	Title     string
	Namespace string
	CSRF      string
	// User is the user the API server knows the credentials as, when it says.
	User string
	// Notice is shown above the content, such as why the list is empty.
	Notice string
	Form   *formData
	Perms  permissions
	// ReadOnly disables the form; ReadOnlyReason says why.
	ReadOnly       bool
	ReadOnlyReason string
	EventTypes     []eventTypeDoc
	// Initial is the data the script starts from, as JSON in the page.
	Initial initialData
}

// initialData is what the script starts from before the event stream
// sends its first snapshot.
type initialData struct {
	Selected string        `json:"selected"`
	Views    []webhookView `json:"views"`
	Perms    permissions   `json:"perms"`
	Problem  string        `json:"problem,omitempty"`
}

// formData is the form of one WebhookConfig, or of a new one.
type formData struct {
	Create         bool
	View           webhookView
	EventTypes     []eventChoice
	DeliveryFields []deliveryField
}

// eventChoice is one event type's checkbox.
type eventChoice struct {
	Name, Description string
	Checked           bool
}

// deliveryField is one number field of the delivery settings.
type deliveryField struct {
	Key, Label, Hint string
	Value, Min, Max  int32
}

// eventTypeDoc is the documentation of one event type.
type eventTypeDoc struct {
	Name, Description string
	Reserved          bool
	// Example is the request body of an example delivery; Schema the JSON
	// Schema of its data. Both indented.
	Example, Schema string
}

// permissions are what the user may do, as the API server answers
// SelfSubjectAccessReviews; the page disables what is not allowed, and the
// API server refuses it anyway.
type permissions struct {
	Edit       bool   `json:"edit"`
	EditReason string `json:"editReason,omitempty"`
	ReadSecret bool   `json:"readSecret"`
	Rotate     bool   `json:"rotate"`
	Resend     bool   `json:"resend"`
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	data := s.basePage(r.Context(), "list", "WebhookConfigs")
	s.render(w, http.StatusOK, data)
}

func (s *Server) handleNew(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	data := s.basePage(ctx, "new", "New WebhookConfig")
	data.Perms = s.permissions(ctx, "create", "")
	data.setReadOnly()
	v := webhookView{Enabled: true, Delivery: defaultDelivery(), Events: []string{}}
	data.Form = newForm(true, v)
	s.render(w, http.StatusOK, data)
}

func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	name := r.PathValue("name")
	data := s.basePage(ctx, "webhook", "WebhookConfig "+name)
	whc, err := s.get(ctx, name)
	if err != nil {
		data.Notice = err.Error()
		code := http.StatusBadGateway
		if apierrors.IsNotFound(err) {
			code = http.StatusNotFound
		} else if apierrors.IsForbidden(err) {
			code = http.StatusForbidden
		}
		s.render(w, code, data)
		return
	}
	data.Initial.Selected = name
	data.Perms = s.permissions(ctx, "patch", name)
	ref := newView(whc).SigningSecret
	data.Perms.ReadSecret = s.can(ctx, "get", "", "secrets", "", ref.Name)
	data.Perms.Rotate = s.can(ctx, "update", "", "secrets", "", ref.Name)
	data.Perms.Resend = s.can(ctx, "create", deliveryv1alpha1.GroupName, "webhookdeliveries", "resend", "")
	data.Initial.Perms = data.Perms
	data.setReadOnly()
	data.Form = newForm(false, newView(whc))
	s.render(w, http.StatusOK, data)
}

func (s *Server) handleEventTypes(w http.ResponseWriter, r *http.Request) {
	data := s.basePage(r.Context(), "event-types", "Event types")
	docs, err := eventTypeDocs()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	data.EventTypes = docs
	s.render(w, http.StatusOK, data)
}

// basePage is what every page shows: the namespace, the user, and the list
// of WebhookConfigs as the script starts from it.
func (s *Server) basePage(ctx context.Context, page, title string) *pageData {
	data := &pageData{Page: page, Title: title, Namespace: s.namespace, CSRF: s.csrf, User: s.username(ctx)}
	data.Initial.Views = []webhookView{}
	if page == "event-types" {
		return data
	}
	if _, views, err := s.list(ctx); err != nil {
		data.Initial.Problem = err.Error()
	} else {
		data.Initial.Views = views
	}
	return data
}

// setReadOnly makes the form read-only when the user may not save it.
func (d *pageData) setReadOnly() {
	d.Initial.Perms = d.Perms
	if !d.Perms.Edit {
		d.ReadOnly = true
		d.ReadOnlyReason = d.Perms.EditReason
	}
}

// newForm is the form of v.
func newForm(create bool, v webhookView) *formData {
	f := &formData{Create: create, View: v}
	for _, t := range catalog.Types() {
		if t.Reserved {
			continue
		}
		f.EventTypes = append(f.EventTypes, eventChoice{Name: t.Name, Description: t.Description, Checked: slices.Contains(v.Events, t.Name)})
	}
	d := v.Delivery
	f.DeliveryFields = []deliveryField{
		{Key: "timeoutSeconds", Label: "Timeout per attempt (seconds)", Hint: "1 to 60", Value: d.TimeoutSeconds, Min: 1, Max: 60},
		{Key: "maxAttempts", Label: "Attempts per event", Hint: "1 to 20, the first included", Value: d.MaxAttempts, Min: 1, Max: 20},
		{Key: "initialBackoffSeconds", Label: "First retry after (seconds)", Hint: "doubles with each retry, with jitter", Value: d.InitialBackoffSeconds, Min: 1, Max: 3600},
		{Key: "maxBackoffSeconds", Label: "Longest wait between attempts (seconds)", Hint: "also caps Retry-After", Value: d.MaxBackoffSeconds, Min: 1, Max: 86400},
		{Key: "maxAgeSeconds", Label: "Give up after (seconds)", Hint: "counted from when the event was accepted", Value: d.MaxAgeSeconds, Min: 60, Max: 604800},
		{Key: "maxInFlight", Label: "Concurrent requests", Hint: "to this endpoint at once", Value: d.MaxInFlight, Min: 1, Max: 256},
	}
	return f
}

// render writes the page template with data.
func (s *Server) render(w http.ResponseWriter, code int, data *pageData) {
	var b bytes.Buffer
	if err := s.pages.ExecuteTemplate(&b, "page", data); err != nil {
		http.Error(w, "rendering the page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(b.Bytes())
}

// username asks the API server who the credentials are; "" when it cannot say.
func (s *Server) username(ctx context.Context) string {
	review := &authenticationv1.SelfSubjectReview{}
	if err := s.client.Create(ctx, review); err != nil {
		return ""
	}
	return review.Status.UserInfo.Username
}

// permissions returns whether the user may verb WebhookConfig name (any,
// when empty) and, if not, the API server's reason.
func (s *Server) permissions(ctx context.Context, verb, name string) permissions {
	allowed, reason := s.access(ctx, verb, webhooksv1alpha1.GroupVersion.Group, "webhookconfigs", "", name)
	p := permissions{Edit: allowed}
	if !allowed {
		p.EditReason = fmt.Sprintf("you may not %s webhookconfigs.%s in namespace %q", verb, webhooksv1alpha1.GroupVersion.Group, s.namespace)
		if reason != "" {
			p.EditReason += " (" + reason + ")"
		}
		p.EditReason += "; the \"edit\" role grants it"
	}
	return p
}

// can reports whether the user may verb the resource; true when the API
// server cannot say, so that it decides on the request itself.
func (s *Server) can(ctx context.Context, verb, group, resource, subresource, name string) bool {
	allowed, _ := s.access(ctx, verb, group, resource, subresource, name)
	return allowed
}

// access asks the API server whether the user may verb the resource in the
// namespace, with its reason; allowed when the review itself fails.
func (s *Server) access(ctx context.Context, verb, group, resource, subresource, name string) (bool, string) {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: s.namespace, Verb: verb, Group: group, Resource: resource, Subresource: subresource, Name: name,
		},
	}}
	if err := s.client.Create(ctx, review); err != nil {
		return true, ""
	}
	return review.Status.Allowed, review.Status.Reason
}

// eventTypeDocs documents every catalog type: its example request body and
// the schema of its data, indented.
func eventTypeDocs() ([]eventTypeDoc, error) {
	types := catalog.Types()
	out := make([]eventTypeDoc, 0, len(types))
	for _, t := range types {
		example, err := json.MarshalIndent(struct {
			Type      string          `json:"type"`
			Timestamp string          `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}{t.Name, exampleTimestamp, t.Example}, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("rendering the example of %s: %w", t.Name, err)
		}
		var schema bytes.Buffer
		if err := json.Indent(&schema, t.Schema, "", "  "); err != nil {
			return nil, fmt.Errorf("rendering the schema of %s: %w", t.Name, err)
		}
		out = append(out, eventTypeDoc{Name: t.Name, Description: t.Description, Reserved: t.Reserved,
			Example: string(example), Schema: string(bytes.TrimSpace(schema.Bytes()))})
	}
	return out, nil
}
