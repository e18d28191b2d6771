package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/catalog"
	"github.com/wablast/webhook-operator/internal/signing"
)

func TestAccessNeedsTheToken(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	noRedirect := &http.Client{Jar: r.client.Jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	t.Run("without the token every page and API call is refused", func(t *testing.T) {
		for _, path := range []string{"/", "/new", "/event-types", "/api/webhookconfigs", "/api/watch", "/static/app.js"} {
			code, body := r.get(path)
			if code != http.StatusForbidden || !strings.Contains(body, "access token") {
				t.Errorf("GET %s without the token: %d %q, want 403 naming the access token", path, code, body)
			}
		}
		code, _ := r.send(http.MethodPost, "/api/webhookconfigs", map[string]any{"name": "x"}, nil)
		if code != http.StatusForbidden {
			t.Errorf("POST without the token: %d, want 403", code)
		}
	})
	t.Run("a wrong token is refused and sets no cookie", func(t *testing.T) {
		resp, err := noRedirect.Get(r.base + "/?token=" + strings.Repeat("0", 64))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
			t.Fatalf("wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
		}
	})
	t.Run("the right token sets an HttpOnly SameSite=Strict cookie and redirects to the address without it", func(t *testing.T) {
		resp, err := noRedirect.Get(r.base + "/new?token=" + r.srv.Token())
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/new" {
			t.Fatalf("got %d to %q, want 303 to /new", resp.StatusCode, resp.Header.Get("Location"))
		}
		cookies := resp.Cookies()
		if len(cookies) != 1 || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteStrictMode || cookies[0].Value != r.srv.Token() {
			t.Fatalf("cookies %+v", cookies)
		}
		code, body := r.get("/new")
		if code != http.StatusOK || !strings.Contains(body, ns) {
			t.Fatalf("with the cookie: %d\n%s", code, body)
		}
	})
	t.Run("every answer forbids framing, inline script and referrers", func(t *testing.T) {
		resp, err := r.client.Get(r.base + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "script-src 'self'") || h.Get("Referrer-Policy") != "no-referrer" ||
			h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
			t.Fatalf("headers %v", h)
		}
	})
	t.Run("a host name that is not loopback is refused (DNS rebinding)", func(t *testing.T) {
		req, err := http.NewRequest(http.MethodGet, r.base+"/api/webhookconfigs", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = "attacker.example:" + strings.Split(r.base, ":")[2]
		req.AddCookie(&http.Cookie{Name: r.srv.cookieName, Value: r.srv.Token()})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("Host attacker.example: %d, want 403", resp.StatusCode)
		}
	})
	t.Run("the token in the URL of a change is refused", func(t *testing.T) {
		code, _ := r.send(http.MethodPost, "/api/generate-secret?token="+r.srv.Token(), map[string]any{}, nil)
		if code != http.StatusForbidden {
			t.Fatalf("POST with ?token: %d, want 403", code)
		}
	})
}

func TestChangesNeedTheCSRFToken(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	r.login()
	form := map[string]any{"name": "crm", "url": "https://crm.example.com/hooks", "events": []string{"message.sent"}, "enabled": true}
	for _, tc := range []struct {
		name   string
		change func(http.Header)
	}{
		{"no CSRF token", func(h http.Header) { h.Del("X-CSRF-Token") }},
		{"a wrong CSRF token", func(h http.Header) { h.Set("X-CSRF-Token", strings.Repeat("a", 64)) }},
		{"another Origin", func(h http.Header) { h.Set("Origin", "http://attacker.example") }},
		{"a cross-site fetch", func(h http.Header) { h.Set("Sec-Fetch-Site", "cross-site") }},
	} {
		t.Run(tc.name+" is refused and changes nothing", func(t *testing.T) {
			code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, tc.change)
			if code != http.StatusForbidden || body["message"] == "" {
				t.Fatalf("got %d %v, want 403 with a message", code, body)
			}
			if _, err := getWHC(t, ns, "crm"); !apierrors.IsNotFound(err) {
				t.Fatalf("the refused request created the resource (or: %v)", err)
			}
		})
	}
	t.Run("with the token, the same Origin and site, it is saved", func(t *testing.T) {
		if code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil); code != http.StatusOK {
			t.Fatalf("got %d %v", code, body)
		}
	})
	t.Run("a secret is not handed out without the CSRF token", func(t *testing.T) {
		code, body := r.send(http.MethodPost, "/api/generate-secret", map[string]any{}, func(h http.Header) { h.Del("X-CSRF-Token") })
		if code != http.StatusForbidden || body["secret"] != nil {
			t.Fatalf("got %d %v", code, body)
		}
	})
}

func TestSaveAppliesTheForm(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	r.login()

	form := map[string]any{
		"name": "crm", "url": "https://crm.example.com/hooks/wa",
		"events": []string{"message.sent", "message.failed"}, "enabled": false, "paused": true,
		"delivery": map[string]any{"timeoutSeconds": 20, "maxAttempts": 3, "initialBackoffSeconds": nil},
	}
	code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil)
	if code != http.StatusOK || body["name"] != "crm" {
		t.Fatalf("create: %d %v", code, body)
	}
	whc, err := getWHC(t, ns, "crm")
	if err != nil {
		t.Fatal(err)
	}
	s := whc.Spec
	if s.URL != "https://crm.example.com/hooks/wa" || !slices.Equal(s.Events, []webhooksv1alpha1.EventType{"message.sent", "message.failed"}) ||
		whc.IsEnabled() || !s.Paused || s.Delivery == nil || s.Delivery.TimeoutSeconds != 20 || s.Delivery.MaxAttempts != 3 ||
		s.Delivery.InitialBackoffSeconds != defaultInitialBackoffSeconds || s.SecretRef != nil {
		t.Fatalf("stored spec %+v, delivery %+v", s, s.Delivery)
	}
	if !appliedBy(whc, FieldManager) {
		t.Fatalf("not server-side applied by %s: %+v", FieldManager, whc.ManagedFields)
	}

	t.Run("the page shows the stored values", func(t *testing.T) {
		code, page := r.get("/webhooks/crm")
		if code != http.StatusOK {
			t.Fatalf("%d\n%s", code, page)
		}
		for _, want := range []string{
			`id="f-url" name="url" value="https://crm.example.com/hooks/wa"`,
			`value="message.sent" checked`, `value="message.failed" checked`,
			`id="f-paused" name="paused" checked`, `id="f-timeoutSeconds" name="timeoutSeconds" value="20"`,
		} {
			if !strings.Contains(page, want) {
				t.Errorf("the page lacks %s", want)
			}
		}
		for _, unwanted := range []string{`value="message.delivered" checked`, `id="f-enabled" name="enabled" checked`} {
			if strings.Contains(page, unwanted) {
				t.Errorf("the page has %s", unwanted)
			}
		}
	})

	t.Run("a name that exists is refused beside the name", func(t *testing.T) {
		code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil)
		fe := fieldErrors(t, body)
		if code != http.StatusConflict || len(fe) != 1 || fe[0].Field != "metadata.name" {
			t.Fatalf("got %d %v", code, body)
		}
	})

	t.Run("an update applies the form; a field left out gets its default back", func(t *testing.T) {
		update := map[string]any{"url": "https://crm.example.com/v2", "allEvents": true, "enabled": true, "paused": false,
			"delivery": map[string]any{"timeoutSeconds": 20}}
		code, body := r.send(http.MethodPut, "/api/webhookconfigs/crm", update, nil)
		if code != http.StatusOK {
			t.Fatalf("update: %d %v", code, body)
		}
		whc, err := getWHC(t, ns, "crm")
		if err != nil {
			t.Fatal(err)
		}
		s := whc.Spec
		if s.URL != "https://crm.example.com/v2" || !slices.Equal(s.Events, []webhooksv1alpha1.EventType{"*"}) || !whc.IsEnabled() || s.Paused ||
			s.Delivery.MaxAttempts != defaultMaxAttempts || s.Delivery.TimeoutSeconds != 20 {
			t.Fatalf("stored spec %+v, delivery %+v", s, s.Delivery)
		}
	})

	t.Run("a resource made with kubectl is taken over on save and keeps its secretRef", func(t *testing.T) {
		createWHC(t, ns, "erp", "erp-secret")
		update := map[string]any{"url": "https://erp.example.com/in", "events": []string{"campaign.started"}, "enabled": true}
		if code, body := r.send(http.MethodPut, "/api/webhookconfigs/erp", update, nil); code != http.StatusOK {
			t.Fatalf("update: %d %v", code, body)
		}
		whc, err := getWHC(t, ns, "erp")
		if err != nil {
			t.Fatal(err)
		}
		if whc.Spec.URL != "https://erp.example.com/in" || whc.Spec.SecretRef == nil || whc.Spec.SecretRef.Name != "erp-secret" {
			t.Fatalf("stored spec %+v", whc.Spec)
		}
	})

	t.Run("saving a resource that does not exist says so", func(t *testing.T) {
		code, body := r.send(http.MethodPut, "/api/webhookconfigs/nope", map[string]any{"url": "https://x.example.com", "events": []string{"message.sent"}}, nil)
		if code != http.StatusNotFound || !strings.Contains(fmt.Sprint(body["message"]), `webhookconfig "nope" not found`) {
			t.Fatalf("got %d %v", code, body)
		}
	})
}

// appliedBy reports whether manager server-side applied whc's spec.
func appliedBy(whc *webhooksv1alpha1.WebhookConfig, manager string) bool {
	for _, f := range whc.ManagedFields {
		if f.Manager == manager && f.Operation == metav1.ManagedFieldsOperationApply {
			return true
		}
	}
	return false
}

func TestValidationErrorsGoBesideTheirFields(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	r.login()
	valid := func() map[string]any {
		return map[string]any{"name": "crm", "url": "https://crm.example.com/hooks", "events": []string{"message.sent"}, "enabled": true,
			"delivery": map[string]any{}}
	}
	for _, tc := range []struct {
		name      string
		change    func(map[string]any)
		wantField string
		wantMsg   string
	}{
		{"an ftp URL", func(f map[string]any) { f["url"] = "ftp://crm.example.com/x" }, "spec.url", "url scheme must be http or https"},
		{"a URL with user-info", func(f map[string]any) { f["url"] = "https://u:p@crm.example.com/x" }, "spec.url", "user-info"},
		{"no event type", func(f map[string]any) { f["events"] = []string{} }, "spec.events", ""},
		{"an unknown event type", func(f map[string]any) { f["events"] = []string{"message.sent", "message.read"} }, "spec.events", "unknown event type"},
		{"a timeout of 0", func(f map[string]any) { f["delivery"] = map[string]any{"timeoutSeconds": 0} }, "spec.delivery.timeoutSeconds", "1"},
		{"21 attempts", func(f map[string]any) { f["delivery"] = map[string]any{"maxAttempts": 21} }, "spec.delivery.maxAttempts", "20"},
		{"a first backoff over the longest", func(f map[string]any) {
			f["delivery"] = map[string]any{"initialBackoffSeconds": 100, "maxBackoffSeconds": 50}
		}, "spec.delivery.initialBackoffSeconds", "must not be greater than delivery.maxBackoffSeconds"},
		{"a name with capitals", func(f map[string]any) { f["name"] = "CRM_1" }, "metadata.name", ""},
		{"a short secret", func(f map[string]any) { f["secret"] = "too-short" }, "secret", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := valid()
			tc.change(form)
			code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil)
			if code != http.StatusUnprocessableEntity {
				t.Fatalf("got %d %v, want 422", code, body)
			}
			fe := fieldErrors(t, body)
			found := false
			for _, f := range fe {
				if f.Field == tc.wantField && strings.Contains(f.Message, tc.wantMsg) {
					found = true
				}
			}
			if !found {
				t.Fatalf("no error on %s containing %q in %+v (message %q)", tc.wantField, tc.wantMsg, fe, body["message"])
			}
			if strings.Contains(fmt.Sprint(body), "too-short") {
				t.Errorf("the answer repeats the secret: %v", body)
			}
			var list webhooksv1alpha1.WebhookConfigList
			if err := env.Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil || len(list.Items) != 0 {
				t.Fatalf("a refused save stored something: %v %v", err, list.Items)
			}
		})
	}
}

func TestFormField(t *testing.T) {
	for _, tc := range []struct{ path, msg, want string }{
		{"spec.url", "", "spec.url"},
		{"spec.events[3]", "", "spec.events"},
		{"spec.delivery.maxInFlight", "", "spec.delivery.maxInFlight"},
		{"spec", "Invalid value: \"object\": delivery.initialBackoffSeconds must not be greater than delivery.maxBackoffSeconds", "spec.delivery.initialBackoffSeconds"},
		{"spec.secretRef.name", "", ""},
		{"spec.filter", "", ""},
		{"", "something", ""},
		{"metadata.name", "", "metadata.name"},
	} {
		if got := formField(tc.path, tc.msg); got != tc.want {
			t.Errorf("formField(%q, %q) = %q, want %q", tc.path, tc.msg, got, tc.want)
		}
	}
}

func TestANewSecretIsStoredInItsOwnSecret(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	r.login()
	code, gen := r.send(http.MethodPost, "/api/generate-secret", map[string]any{}, nil)
	secret, _ := gen["secret"].(string)
	if code != http.StatusOK || !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("generate: %d %v", code, gen)
	}
	if _, err := signing.ParseSecret(secret); err != nil {
		t.Fatalf("the generated secret does not parse: %v", err)
	}
	form := map[string]any{"name": "crm", "url": "https://crm.example.com/hooks", "events": []string{"message.sent"}, "enabled": true, "secret": secret}
	if code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil); code != http.StatusOK {
		t.Fatalf("create: %d %v", code, body)
	}
	whc, err := getWHC(t, ns, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if whc.Spec.SecretRef == nil || whc.Spec.SecretRef.Name != "crm-webhook-secret" {
		t.Fatalf("secretRef %+v", whc.Spec.SecretRef)
	}
	var sec corev1.Secret
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "crm-webhook-secret"}, &sec); err != nil {
		t.Fatal(err)
	}
	if string(sec.Data["secret"]) != secret {
		t.Fatal("the Secret does not hold the generated secret")
	}
	if len(sec.OwnerReferences) != 1 || sec.OwnerReferences[0].UID != whc.UID {
		t.Fatalf("the Secret is not owned by the WebhookConfig: %+v", sec.OwnerReferences)
	}
	if strings.Contains(r.errLog.String(), secret) {
		t.Fatal("the secret is in the log")
	}
	t.Run("a secret whose Secret exists already is refused beside the secret", func(t *testing.T) {
		form["name"] = "crm2"
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm2-webhook-secret"}, StringData: map[string]string{"secret": "keep-this-value-0123456789"}}
		if err := env.Client.Create(context.Background(), other); err != nil {
			t.Fatal(err)
		}
		code, body := r.send(http.MethodPost, "/api/webhookconfigs", form, nil)
		fe := fieldErrors(t, body)
		if code != http.StatusConflict || len(fe) != 1 || fe[0].Field != "secret" {
			t.Fatalf("got %d %v", code, body)
		}
		if _, err := getWHC(t, ns, "crm2"); !apierrors.IsNotFound(err) {
			t.Fatalf("the WebhookConfig was created: %v", err)
		}
	})
}

func TestSecretShownOnRequestAndRotated(t *testing.T) {
	ns := env.Namespace(t)
	const old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	createWHC(t, ns, "crm", "crm-secret")
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crm-secret"}, StringData: map[string]string{"secret": old}}
	if err := env.Client.Create(context.Background(), sec); err != nil {
		t.Fatal(err)
	}
	r := serve(t, env.Config, ns)
	r.login()
	_, page := r.get("/webhooks/crm")
	if strings.Contains(page, old) {
		t.Fatal("the page holds the secret before it was asked for")
	}
	if !strings.Contains(page, "crm-secret") {
		t.Fatal("the page does not name the signing Secret")
	}
	code, body := r.send(http.MethodPost, "/api/webhookconfigs/crm/secret", map[string]any{}, nil)
	if code != http.StatusOK || fmt.Sprint(body["secrets"]) != "["+old+"]" {
		t.Fatalf("show: %d %v", code, body)
	}

	before := time.Now()
	code, body = r.send(http.MethodPost, "/api/webhookconfigs/crm/rotate", map[string]any{"grace": "1h"}, nil)
	if code != http.StatusOK || body["secret"] != "crm-secret" {
		t.Fatalf("rotate: %d %v", code, body)
	}
	end, err := time.Parse(time.RFC3339, fmt.Sprint(body["endsAt"]))
	if err != nil || end.Before(before.Add(time.Hour).Truncate(time.Second)) || end.After(time.Now().Add(time.Hour+time.Second)) {
		t.Fatalf("endsAt %v (%v), want an hour from now", body["endsAt"], err)
	}
	if strings.Contains(fmt.Sprint(body), "whsec_") {
		t.Fatalf("the rotation's answer holds a secret: %v", body)
	}
	if err := env.Client.Get(context.Background(), client.ObjectKeyFromObject(sec), sec); err != nil {
		t.Fatal(err)
	}
	values := strings.Fields(string(sec.Data["secret"]))
	if len(values) != 2 || values[1] != old || values[0] == old || sec.Annotations[webhooksv1alpha1.AnnotationRotationEndsAt] != body["endsAt"] {
		t.Fatalf("the Secret after rotation: %d values, annotations %v", len(values), sec.Annotations)
	}
	code, body = r.send(http.MethodPost, "/api/webhookconfigs/crm/secret", map[string]any{}, nil)
	if code != http.StatusOK || fmt.Sprint(body["secrets"]) != "["+values[0]+" "+old+"]" {
		t.Fatalf("show during the grace period: %d %v", code, body)
	}
	if code, body := r.send(http.MethodPost, "/api/webhookconfigs/crm/rotate", map[string]any{"grace": "-1h"}, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("a negative grace: %d %v", code, body)
	}
	if log := r.errLog.String(); strings.Contains(log, old) || strings.Contains(log, values[0]) {
		t.Fatalf("a secret is in the log:\n%s", log)
	}
}

func TestTestRequestSetsTheAnnotation(t *testing.T) {
	ns := env.Namespace(t)
	createWHC(t, ns, "crm", "")
	r := serve(t, env.Config, ns)
	r.login()
	code, body := r.send(http.MethodPost, "/api/webhookconfigs/crm/test", map[string]any{}, nil)
	token, _ := body["token"].(string)
	if code != http.StatusOK || token == "" {
		t.Fatalf("test: %d %v", code, body)
	}
	whc, err := getWHC(t, ns, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if got := whc.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt]; got != token {
		t.Fatalf("annotation %q, want the token %q", got, token)
	}
	code, body = r.send(http.MethodPost, "/api/webhookconfigs/nope/test", map[string]any{}, nil)
	if code != http.StatusNotFound || !strings.Contains(fmt.Sprint(body["message"]), `webhookconfig "nope" not found`) {
		t.Fatalf("test of a missing resource: %d %v", code, body)
	}
}

func TestViewOnlyUserGetsTheAPIServersRefusal(t *testing.T) {
	ns := env.Namespace(t)
	createWHC(t, ns, "crm", "crm-secret")
	cfg, user := viewerConfig(t, ns)
	r := serve(t, cfg, ns)
	r.login()

	code, page := r.get("/webhooks/crm")
	if code != http.StatusOK {
		t.Fatalf("the viewer's page: %d\n%s", code, page)
	}
	for _, want := range []string{`id="readonly-notice"`, `<fieldset id="form-fields" disabled>`, `id="test" disabled`, `id="user">` + user + `<`} {
		if !strings.Contains(page, want) {
			t.Errorf("the viewer's page lacks %s", want)
		}
	}
	for _, tc := range []struct {
		name, method, path string
		body               map[string]any
		want               string
	}{
		{"save", http.MethodPut, "/api/webhookconfigs/crm",
			map[string]any{"url": "https://evil.example.com", "events": []string{"message.sent"}, "enabled": true},
			`User "` + user + `" cannot patch resource "webhookconfigs" in API group "webhooks.wablast.io"`},
		{"create", http.MethodPost, "/api/webhookconfigs",
			map[string]any{"name": "new", "url": "https://evil.example.com", "events": []string{"message.sent"}, "enabled": true},
			`User "` + user + `" cannot patch resource "webhookconfigs"`},
		{"test", http.MethodPost, "/api/webhookconfigs/crm/test", map[string]any{}, `cannot patch resource "webhookconfigs"`},
		{"show the secret", http.MethodPost, "/api/webhookconfigs/crm/secret", map[string]any{}, `cannot get resource "secrets"`},
		{"rotate", http.MethodPost, "/api/webhookconfigs/crm/rotate", map[string]any{}, `cannot get resource "secrets"`},
	} {
		t.Run(tc.name+" is refused with the API server's message", func(t *testing.T) {
			code, body := r.send(tc.method, tc.path, tc.body, nil)
			if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(body["message"]), tc.want) {
				t.Fatalf("got %d %v, want 403 containing %q", code, body, tc.want)
			}
		})
	}
	whc, err := getWHC(t, ns, "crm")
	if err != nil {
		t.Fatal(err)
	}
	if whc.Spec.URL != "https://crm.example.com/hooks/wa" || whc.Annotations[webhooksv1alpha1.AnnotationTestRequestedAt] != "" {
		t.Fatalf("the viewer changed the resource: %+v %v", whc.Spec, whc.Annotations)
	}
	t.Run("the list works for the viewer", func(t *testing.T) {
		code, body := r.get("/api/webhookconfigs")
		if code != http.StatusOK || !strings.Contains(body, `"name":"crm"`) {
			t.Fatalf("%d %s", code, body)
		}
	})
}

func TestDeliveriesPanelSaysWhenTheLogIsNotServed(t *testing.T) {
	ns := env.Namespace(t)
	createWHC(t, ns, "crm", "")
	r := serve(t, env.Config, ns)
	r.login()
	code, body := r.get("/api/webhookconfigs/crm/deliveries")
	var got deliveriesBody
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("%d %s: %v", code, body, err)
	}
	if code != http.StatusOK || got.Available || !strings.Contains(got.Message, "delivery log API (delivery.wablast.io) is not served") {
		t.Fatalf("got %d %+v", code, got)
	}
	// The page itself still renders.
	if code, page := r.get("/webhooks/crm"); code != http.StatusOK || !strings.Contains(page, `id="deliveries"`) {
		t.Fatalf("the page: %d", code)
	}
	code, resend := r.send(http.MethodPost, "/api/webhookconfigs/crm/resend", map[string]any{"eventID": "evt-1"}, nil)
	if code < 400 || code == http.StatusInternalServerError || resend["message"] == "" {
		t.Fatalf("resend without the API: %d %v", code, resend)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	ns := env.Namespace(t)
	createWHC(t, ns, "crm", "")
	r := serve(t, env.Config, ns)
	r.login()
	events := r.openStream()

	snap := next(t, events, func(e sseEvent) bool { return e.name == "snapshot" })
	var views []webhookView
	if err := json.Unmarshal([]byte(snap.data), &views); err != nil || len(views) != 1 || views[0].Name != "crm" {
		t.Fatalf("snapshot %s: %v", snap.data, err)
	}

	createWHC(t, ns, "erp", "")
	next(t, events, func(e sseEvent) bool { return e.name == "upsert" && strings.Contains(e.data, `"name":"erp"`) })

	// The operator's status reaches the page.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		whc, err := getWHC(t, ns, "crm")
		if err != nil {
			return err
		}
		whc.Status.Active = true
		whc.Status.SuccessRate = "97.5%"
		whc.Status.TotalEventsSent = 40
		whc.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Succeeded", Message: "live", LastTransitionTime: metav1.Now()}}
		return env.Client.Status().Update(context.Background(), whc)
	})
	if err != nil {
		t.Fatal(err)
	}
	up := next(t, events, func(e sseEvent) bool { return e.name == "upsert" && strings.Contains(e.data, `"successRate":"97.5%"`) })
	var v webhookView
	if err := json.Unmarshal([]byte(up.data), &v); err != nil || !v.Active || v.Ready != "True" || v.Sent != 40 {
		t.Fatalf("upsert %s: %v", up.data, err)
	}

	whc, err := getWHC(t, ns, "erp")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Delete(context.Background(), whc); err != nil {
		t.Fatal(err)
	}
	next(t, events, func(e sseEvent) bool { return e.name == "delete" && e.data == `{"name":"erp"}` })
}

func TestEventTypesPageDocumentsTheCatalog(t *testing.T) {
	ns := env.Namespace(t)
	r := serve(t, env.Config, ns)
	r.login()
	code, page := r.get("/event-types")
	if code != http.StatusOK {
		t.Fatalf("%d", code)
	}
	for _, typ := range catalog.Types() {
		if !strings.Contains(page, `<section id="`+typ.Name+`"`) {
			t.Errorf("no section for %s", typ.Name)
		}
		var example map[string]any
		if err := json.Unmarshal(typ.Example, &example); err != nil {
			t.Fatal(err)
		}
		for key := range example {
			if !strings.Contains(page, "&#34;"+key+"&#34;") {
				t.Errorf("the example of %s lacks %q", typ.Name, key)
			}
		}
		if !strings.Contains(page, "&#34;type&#34;: &#34;"+typ.Name+"&#34;") {
			t.Errorf("no envelope of %s", typ.Name)
		}
	}
	if !strings.Contains(page, "&#34;$schema&#34;") {
		t.Error("no schema")
	}
}

func TestServeStopsWhenItsContextEnds(t *testing.T) {
	ns := env.Namespace(t)
	c, err := client.NewWithWatch(env.Config, client.Options{Scheme: testScheme()})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Options{Client: c, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ln, err := Listen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); host != "127.0.0.1" {
		t.Fatalf("listening on %s, want 127.0.0.1", ln.Addr())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()

	// An open event stream must not hold the stop up.
	req, err := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/api/watch", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: srv.cookieName, Value: srv.Token()})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", resp.StatusCode)
	}
	streamDone := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		close(streamDone)
	}()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return within 10s")
	}
	select {
	case <-streamDone:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream is still open after the stop")
	}
	if conn, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the port still accepts connections after the stop")
	}
}
