//go:build reliability

package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// TestBadInputIsRefusedClearlyAndHarmsNothing sends bad input of every kind
// — manifests, events, tokens, headers — and expects each to be refused
// with a clear error, and nothing stored to be lost or duplicated: good
// events posted before and after the bad ones are each delivered exactly
// once, with exactly the content posted.
func TestBadInputIsRefusedClearlyAndHarmsNothing(t *testing.T) {
	ns := env.Namespace(t)
	other := env.Namespace(t)
	token, otherToken := randomToken(), randomToken()
	createIngestToken(t, ns, token)
	createIngestToken(t, other, otherToken)
	rc := newReceiver(t, testutil.NewLedger(), answerOK)
	createEndpoint(t, ns, "crm", rc.URL+"/hooks/wa", policy{initialBackoff: 1})
	m := startManager(t, managerOptions{dataDir: t.TempDir()})
	m.WaitReady(90 * time.Second)
	waitWHCReady(t, ns, "crm")

	// Good events before.
	var good []string
	before := idRange("before", 0, 10)
	mustPost(t, m.IngestAddr, ns, token, rc.ledger, events(before, ""), false)
	mustPost(t, m.IngestAddr, ns, token, rc.ledger, events([]string{"before-single"}, ""), true)
	good = append(good, append(before, "before-single")...)

	t.Run("manifests", func(t *testing.T) {
		manifest := func(name, spec string) string {
			return fmt.Sprintf("apiVersion: webhooks.wablast.io/v1alpha1\nkind: WebhookConfig\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n%s", name, ns, spec)
		}
		cases := []struct {
			sentence, name, spec, want string
		}{
			{"a url that is not an absolute URL is rejected", "bad-url",
				"  url: not a url\n  events: [message.sent]\n",
				"url must be an absolute URL such as https://example.com/hooks"},
			{"a url with a scheme other than http or https is rejected", "bad-scheme",
				"  url: ftp://example.com/hooks\n  events: [message.sent]\n",
				"url scheme must be http or https"},
			{"a url with user-info is rejected", "bad-userinfo",
				"  url: https://user:pass@example.com/hooks\n  events: [message.sent]\n",
				"url must not contain user-info"},
			{"an unknown event type is rejected", "bad-event",
				"  url: https://example.com/hooks\n  events: [message.read]\n",
				`Invalid value: "message.read": unknown event type: the types are message.sent`},
			{"an empty event list is rejected", "no-events",
				"  url: https://example.com/hooks\n  events: []\n",
				"should have at least 1 items"},
			{`"*" combined with another type is rejected`, "star-and-more",
				"  url: https://example.com/hooks\n  events: [\"*\", message.sent]\n",
				`"*" already selects every event type`},
			{"a secretRef with a namespace is rejected", "bad-secretref",
				"  url: https://example.com/hooks\n  events: [message.sent]\n  secretRef:\n    name: s\n    namespace: elsewhere\n",
				"secretRef.namespace is not supported"},
			{"a timeoutSeconds out of range is rejected", "bad-timeout",
				"  url: https://example.com/hooks\n  events: [message.sent]\n  delivery:\n    timeoutSeconds: 61\n",
				"should be less than or equal to 60"},
		}
		dir := t.TempDir()
		for _, tc := range cases {
			t.Run(tc.sentence, func(t *testing.T) {
				path := filepath.Join(dir, tc.name+".yaml")
				if err := os.WriteFile(path, []byte(manifest(tc.name, tc.spec)), 0o644); err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				out, err := env.Kubectl(ctx, "apply", "-f", path)
				if err == nil {
					t.Errorf("kubectl apply succeeded:\n%s", out)
				}
				if !strings.Contains(out, tc.want) {
					t.Errorf("kubectl apply said:\n%s\nwant a message containing %q", out, tc.want)
				}
				t.Logf("RESULT bad input manifest %q: exit error %v, said: %s", tc.sentence, err, strings.TrimSpace(out))
				// Nothing is stored.
				out, err = env.Kubectl(ctx, "get", "webhookconfig", tc.name, "-n", ns)
				if err == nil || !strings.Contains(out, "NotFound") {
					t.Errorf("the rejected %s exists: %v\n%s", tc.name, err, out)
				}
			})
		}
	})

	t.Run("requests", func(t *testing.T) {
		big := fmt.Sprintf(`{"id":"too-large","type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"+6281234567890","note":%q}}`,
			strings.Repeat("x", 300<<10))
		var tooMany strings.Builder
		for i := range 1001 {
			tooMany.WriteString(eventLine(fmt.Sprintf("too-many-%d", i)) + "\n")
		}
		// A batch with one bad line, whose good lines use ids that are
		// posted (and must be delivered once) later, with other data: a
		// refused batch must not claim them (the content check would see
		// this batch's data under those ids).
		badBatch := eventLine("after-00000") + "\n" + `{"id":"bad-line","type":"message.sent",` + "\n" + eventLine("after-00001") + "\n"

		cases := []struct {
			sentence    string
			namespace   string // ns when empty
			token       string // the namespace's token when empty; "-" for none
			contentType string
			body        string
			status      int
			code        string
			// lines is the bad lines a batch error must name.
			lines []int
		}{
			// Events.
			{sentence: "malformed JSON is a 400 malformed_json", contentType: "application/json",
				body: `{"id":"malformed","type":"message.sent",`, status: 400, code: "malformed_json"},
			{sentence: "an empty body is a 400 malformed_json", contentType: "application/json",
				body: ``, status: 400, code: "malformed_json"},
			{sentence: "an unknown top-level field is a 400 invalid_event", contentType: "application/json",
				body: `{"id":"unknown-field","type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"+6281234567890"},"extra":1}`, status: 400, code: "invalid_event"},
			{sentence: "an id with a forbidden character is a 400 invalid_event", contentType: "application/json",
				body: `{"id":"bad/id","type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"+6281234567890"}}`, status: 400, code: "invalid_event"},
			{sentence: "an unknown type is a 422 unknown_event_type", contentType: "application/json",
				body: `{"id":"unknown-type","type":"message.read","data":{"messageId":"m"}}`, status: 422, code: "unknown_event_type"},
			{sentence: "the reserved type webhook.test is a 422 reserved_event_type", contentType: "application/json",
				body: `{"id":"reserved","type":"webhook.test","data":{}}`, status: 422, code: "reserved_event_type"},
			{sentence: "data missing required fields is a 422 schema_violation", contentType: "application/json",
				body: `{"id":"schema-1","type":"message.sent","data":{"messageId":"m"}}`, status: 422, code: "schema_violation"},
			{sentence: "data with a malformed phone number is a 422 schema_violation", contentType: "application/json",
				body: `{"id":"schema-2","type":"message.sent","data":{"messageId":"m","sessionId":"s","to":"0812"}}`, status: 422, code: "schema_violation"},
			{sentence: "an event over 256 KiB is a 413 event_too_large", contentType: "application/json",
				body: big, status: 413, code: "event_too_large"},
			{sentence: "a batch with one bad line is a 400 invalid_batch naming that line, and nothing of it is accepted", contentType: "application/x-ndjson",
				body: badBatch, status: 400, code: "invalid_batch", lines: []int{2}},
			{sentence: "a batch of more than 1,000 events is a 413 batch_too_large", contentType: "application/x-ndjson",
				body: tooMany.String(), status: 413, code: "batch_too_large"},
			{sentence: "a wrong content type is a 415 unsupported_media_type", contentType: "application/xml",
				body: eventLine("wrong-type"), status: 415, code: "unsupported_media_type"},
			// Tokens.
			{sentence: "no token is a 401 unauthenticated", token: "-", contentType: "application/json",
				body: eventLine("no-token"), status: 401, code: "unauthenticated"},
			{sentence: "a garbage token is a 401 unauthenticated", token: "garbage-" + randomToken(), contentType: "application/json",
				body: eventLine("garbage-token"), status: 401, code: "unauthenticated"},
			{sentence: "another namespace's static token is a 401 unauthenticated, as an unknown token is", token: otherToken, contentType: "application/json",
				body: eventLine("other-token"), status: 401, code: "unauthenticated"},
			{sentence: "this namespace's static token in another namespace is a 401 unauthenticated, as an unknown token is", namespace: other, contentType: "application/json",
				body: eventLine("wrong-namespace"), status: 401, code: "unauthenticated"},
			// Headers.
			{sentence: "a missing Content-Type is a 415 unsupported_media_type", contentType: "",
				body: eventLine("no-content-type"), status: 415, code: "unsupported_media_type"},
			{sentence: "Content-Type: text/plain is a 415 unsupported_media_type", contentType: "text/plain",
				body: eventLine("text-plain"), status: 415, code: "unsupported_media_type"},
			{sentence: "a charset other than UTF-8 is a 415 unsupported_media_type", contentType: "application/json; charset=iso-8859-1",
				body: eventLine("latin1"), status: 415, code: "unsupported_media_type"},
		}
		for _, tc := range cases {
			t.Run(tc.sentence, func(t *testing.T) {
				target, tok := ns, token
				if tc.namespace != "" {
					target = tc.namespace
				}
				switch tc.token {
				case "":
				case "-":
					tok = ""
				default:
					tok = tc.token
				}
				code, body, err := post(m.IngestAddr, target, tok, tc.contentType, []byte(tc.body))
				if err != nil {
					t.Fatal(err)
				}
				var e struct {
					Error struct {
						Code    string `json:"code"`
						Message string `json:"message"`
						Lines   []int  `json:"lines"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(body), &e); err != nil {
					t.Errorf("the error body is not JSON: %q", body)
				}
				if code != tc.status || e.Error.Code != tc.code {
					t.Errorf("got %d %s, want %d %s: %s", code, e.Error.Code, tc.status, tc.code, strings.TrimSpace(body))
				}
				if e.Error.Message == "" {
					t.Errorf("no error message: %s", body)
				}
				if tc.lines != nil && fmt.Sprint(e.Error.Lines) != fmt.Sprint(tc.lines) {
					t.Errorf("lines %v, want %v", e.Error.Lines, tc.lines)
				}
				t.Logf("RESULT bad input request %q: %d %s: %s", tc.sentence, code, e.Error.Code, truncateString(e.Error.Message, 200))
			})
		}
	})

	// Good events after.
	after := idRange("after", 0, 10)
	mustPost(t, m.IngestAddr, ns, token, rc.ledger, events(after, ""), false)
	mustPost(t, m.IngestAddr, ns, token, rc.ledger, events([]string{"after-single"}, ""), true)
	good = append(good, append(after, "after-single")...)

	// Each good event exactly once, and nothing else.
	testutil.EventuallyEvery(t, time.Minute, 100*time.Millisecond, func() error {
		if miss := missing(rc, good); len(miss) > 0 {
			return fmt.Errorf("good events not delivered: %v", miss)
		}
		return nil
	})
	// Nothing but the good events was stored (a refused event counted here
	// would be delivered sooner or later), and every stored event has its
	// outcome: nothing more can arrive.
	if n := accepted(t, m); n != len(good) {
		t.Errorf("the manager accepted and stored %d events, want the %d good ones", n, len(good))
	}
	testutil.EventuallyEvery(t, 30*time.Second, 250*time.Millisecond, func() error {
		if c := statusCounters(t, ns, "crm"); c.Delivered != int64(len(good)) || c.Sent != int64(len(good)) || c.Failed != 0 || c.Pending != 0 {
			return fmt.Errorf("status %s, want %d delivered", c, len(good))
		}
		return nil
	})
	oks := rc.okCounts()
	want := map[string]bool{}
	for _, id := range good {
		want[id] = true
		if oks[id] != 1 {
			t.Errorf("good event %s delivered %d times, want once", id, oks[id])
		}
	}
	for id, n := range oks {
		if !want[id] {
			t.Errorf("%s delivered %d times: it was refused and must not be delivered", id, n)
		}
	}
	rc.checkContent(t, "bad input", good)
	t.Logf("RESULT bad input: the %d good events posted before and after the bad ones were each delivered once; nothing else was delivered (receiver: %d requests)", len(good), rc.total.Load())
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
