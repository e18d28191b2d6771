package receiver

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wablast/webhook-operator/internal/signing"
)

const (
	whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	// whsecPadded is a generated secret: 32 bytes, base64 with padding.
	whsecPadded = "whsec_3q2+796tvu/erb7v3q2+796tvu/erb7v3q2+796tvu8="
	raw         = "a-raw-secret-of-32-bytes-long!!!"
	other       = "whsec_QWxzbyBhIHNlY3JldCBvZiB0d2VudHktZm91cg=="
)

type delivery struct {
	name    string
	secret  string
	headers http.Header
	body    []byte
	now     time.Time
	valid   bool
}

// deliveries signs requests with the operator's signing package and lists
// whether the receiver code must accept them.
func deliveries(t *testing.T) []delivery {
	t.Helper()
	sent := time.Unix(1764324902, 0)
	body := []byte(`{"type":"message.delivered","timestamp":"2026-11-28T10:15:02.123Z","data":{"messageId":"m1"}}`)
	sign := func(secrets string) http.Header {
		keys, err := signing.ParseSecrets(secrets)
		if err != nil {
			t.Fatal(err)
		}
		h := http.Header{}
		signing.SetHeaders(h, keys, "msg_p5jXN8AQM9LWM0D4loKWxJek", sent, body)
		return h
	}
	return []delivery{
		{"a whsec_ secret", whsec, sign(whsec), body, sent.Add(time.Minute), true},
		{"a padded whsec_ secret", whsecPadded, sign(whsecPadded), body, sent, true},
		{"a raw secret", raw, sign(raw), body, sent, true},
		{"a secret read with its trailing newline", whsec + "\n", sign(whsec), body, sent, true},
		{"the new secret during a rotation", other, sign(other + " " + whsec), body, sent, true},
		{"the old secret during a rotation", whsec, sign(other + " " + whsec), body, sent, true},
		{"another secret", other, sign(whsec), body, sent, false},
		{"a modified body", whsec, sign(whsec), append([]byte(" "), body...), sent, false},
		{"a replay after 6 minutes", whsec, sign(whsec), body, sent.Add(6 * time.Minute), false},
		{"a timestamp 6 minutes ahead", whsec, sign(whsec), body, sent.Add(-6 * time.Minute), false},
		{"no signature header", whsec, func() http.Header { h := sign(whsec); h.Del("webhook-signature"); return h }(), body, sent, false},
		{"no id header", whsec, func() http.Header { h := sign(whsec); h.Del("webhook-id"); return h }(), body, sent, false},
	}
}

func TestGoReceiverVerifiesTheOperatorsSignatures(t *testing.T) {
	for _, d := range deliveries(t) {
		t.Run(d.name, func(t *testing.T) {
			err := Verify(d.secret, d.headers, d.body, d.now)
			if (err == nil) != d.valid {
				t.Fatalf("Verify = %v, want valid %v", err, d.valid)
			}
		})
	}
}

func TestNodeReceiverVerifiesTheOperatorsSignatures(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not on PATH")
	}
	script, err := filepath.Abs("verify.js")
	if err != nil {
		t.Fatal(err)
	}
	const harness = `
const { verify } = require(process.argv[1]);
const c = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
try { verify(c.secret, c.headers, Buffer.from(c.body, "base64"), c.now); console.log("valid"); }
catch (e) { console.log("invalid: " + e.message); }
`
	for _, d := range deliveries(t) {
		t.Run(d.name, func(t *testing.T) {
			// Node lower-cases header names.
			lower := map[string]string{}
			for k, v := range d.headers {
				lower[strings.ToLower(k)] = v[0]
			}
			in, _ := json.Marshal(map[string]any{
				"secret": d.secret, "headers": lower, "body": d.body, "now": d.now.Unix(),
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, node, "-e", harness, script)
			cmd.Stdin = bytes.NewReader(in)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("node: %v: %s", err, out)
			}
			got := string(out)
			if valid := got == "valid\n"; valid != d.valid {
				t.Fatalf("node says %q, want valid %v", got, d.valid)
			}
		})
	}
}
