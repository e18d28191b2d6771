package signing

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The known-answer vector published with the Standard Webhooks spec.
const (
	specSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specUnix      = 1614265330
	specBody      = `{"test": 2432232314}`
	specSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

// rawSecret is a non-whsec secret used as-is as the HMAC key.
const rawSecret = "raw-secret-used-verbatim-as-key!"

// refSignature computes one "v1,..." entry independently of the package code.
func refSignature(key []byte, id string, unix int64, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + strconv.FormatInt(unix, 10) + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

func mustParse(t *testing.T, s string) []byte {
	t.Helper()
	key, err := ParseSecret(s)
	if err != nil {
		t.Fatalf("ParseSecret: %v", err)
	}
	return key
}

func TestSignKnownAnswers(t *testing.T) {
	specKey := mustParse(t, specSecret)
	rawKey := mustParse(t, rawSecret)
	rawWant := refSignature([]byte(rawSecret), specID, specUnix, specBody)

	tests := map[string]struct {
		keys [][]byte
		want string
	}{
		"the spec vector signs to the published signature": {
			keys: [][]byte{specKey},
			want: specSignature,
		},
		"a raw secret is used verbatim as the HMAC key": {
			keys: [][]byte{rawKey},
			want: rawWant,
		},
		"two keys give two space-separated signatures in key order": {
			keys: [][]byte{specKey, rawKey},
			want: specSignature + " " + rawWant,
		},
		"no keys give an empty header value": {
			keys: nil,
			want: "",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ts := time.Unix(specUnix, 999_000_000) // sub-second part is dropped
			got := Sign(tc.keys, specID, ts, []byte(specBody))
			if got != tc.want {
				t.Errorf("Sign = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSetHeaders(t *testing.T) {
	h := http.Header{}
	h.Set(HeaderSignature, "stale")
	SetHeaders(h, [][]byte{mustParse(t, specSecret)}, specID, time.Unix(specUnix, 0), []byte(specBody))
	want := map[string]string{
		HeaderID:        specID,
		HeaderTimestamp: "1614265330",
		HeaderSignature: specSignature,
	}
	for name, v := range want {
		if got := h.Values(name); len(got) != 1 || got[0] != v {
			t.Errorf("header %s = %q, want [%q]", name, got, v)
		}
	}
}

func whsec(n int) string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xA5}, n))
}

func TestParseSecret(t *testing.T) {
	specKey, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(specSecret, SecretPrefix))
	tests := map[string]struct {
		in      string
		want    []byte
		wantErr error
	}{
		"a valid whsec secret decodes to its key": {
			in: specSecret, want: specKey,
		},
		"a whsec secret without padding is accepted": {
			in: strings.TrimRight(whsec(25), "="), want: bytes.Repeat([]byte{0xA5}, 25),
		},
		"a whsec secret decoding to 24 bytes is accepted": {
			in: whsec(24), want: bytes.Repeat([]byte{0xA5}, 24),
		},
		"a whsec secret decoding to 64 bytes is accepted": {
			in: whsec(64), want: bytes.Repeat([]byte{0xA5}, 64),
		},
		"a whsec secret with bad base64 is invalid": {
			in: "whsec_this*is*not*base64*at*all!!", wantErr: ErrSecretInvalid,
		},
		"a whsec secret with wrong padding is invalid": {
			in: whsec(25) + "==", wantErr: ErrSecretInvalid,
		},
		"a whsec secret with an embedded newline is invalid": {
			in: specSecret[:20] + "\n" + specSecret[20:], wantErr: ErrSecretInvalid,
		},
		"a whsec secret decoding to 23 bytes is invalid": {
			in: whsec(23), wantErr: ErrSecretInvalid,
		},
		"a whsec secret decoding to 65 bytes is invalid": {
			in: whsec(65), wantErr: ErrSecretInvalid,
		},
		"a bare whsec prefix is invalid": {
			in: SecretPrefix, wantErr: ErrSecretInvalid,
		},
		"a raw secret of 15 bytes is too short": {
			in: "fifteen-bytes!!", wantErr: ErrSecretTooShort,
		},
		"a raw secret of 16 bytes is used as-is": {
			in: "sixteen-bytes!!!", want: []byte("sixteen-bytes!!!"),
		},
		"an empty secret is no secret": {
			in: "", wantErr: ErrNoSecret,
		},
		"a whitespace-only secret is no secret": {
			in: " \n\t ", wantErr: ErrNoSecret,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseSecret(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("key = %x, want nil on error", got)
				}
				assertNoLeak(t, err, tc.in)
				// Nor its length: the message ends up in status.
				for _, n := range []int{len(tc.in), len(tc.in) - len(SecretPrefix), decodedLen(tc.in)} {
					limit := n == MinRawSecretBytes || n == minEncodedKeyBytes || n == maxEncodedKeyBytes
					if n > 0 && !limit && regexp.MustCompile(`\b`+strconv.Itoa(n)+`\b`).MatchString(err.Error()) {
						t.Errorf("the error %q gives the secret's length %d", err, n)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("key = %x, want %x", got, tc.want)
			}
		})
	}
}

// assertNoLeak fails if err's message contains any of the secrets, or the
// base64 part of a whsec secret. The bare prefix is not secret text.
func assertNoLeak(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for _, part := range []string{strings.TrimSpace(s), strings.TrimPrefix(strings.TrimSpace(s), SecretPrefix)} {
			if len(part) >= 4 && part != SecretPrefix && strings.Contains(err.Error(), part) {
				t.Errorf("error %q leaks secret text %q", err, part)
			}
		}
	}
}

func TestParseSecrets(t *testing.T) {
	good2 := whsec(32)
	tests := map[string]struct {
		in      string
		want    [][]byte
		wantErr error
		wantMsg string
	}{
		"a single secret with a trailing newline": {
			in:   specSecret + "\n",
			want: [][]byte{mustParse(t, specSecret)},
		},
		"multiple secrets separated by newlines keep their order": {
			in:   "\n" + good2 + "\n" + specSecret + "\r\n" + rawSecret + "\n",
			want: [][]byte{mustParse(t, good2), mustParse(t, specSecret), []byte(rawSecret)},
		},
		"multiple secrets separated by spaces and tabs": {
			in:   "  " + specSecret + " \t " + rawSecret + " ",
			want: [][]byte{mustParse(t, specSecret), []byte(rawSecret)},
		},
		"one bad entry among good ones names its index": {
			in:      specSecret + "\nwhsec_c2hvcnQtc2hvcnQ=\n" + rawSecret,
			wantErr: ErrSecretInvalid,
			wantMsg: "index 1",
		},
		"a short raw entry last names its index": {
			in:      specSecret + " " + rawSecret + " tiny-secret-val",
			wantErr: ErrSecretTooShort,
			wantMsg: "index 2",
		},
		"an empty value is no secret": {
			in: "", wantErr: ErrNoSecret,
		},
		"a whitespace-only value is no secret": {
			in: " \n \n", wantErr: ErrNoSecret,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := ParseSecrets(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("keys = %x, want nil on error", got)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not mention %q", err, tc.wantMsg)
				}
				assertNoLeak(t, err, strings.Fields(tc.in)...)
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d keys, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Errorf("key %d = %x, want %x", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestGenerateSecret(t *testing.T) {
	a, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a, SecretPrefix) {
		t.Errorf("secret lacks %q prefix", SecretPrefix)
	}
	if a == b {
		t.Error("two generated secrets are equal")
	}
	key := mustParse(t, a)
	if len(key) != 32 {
		t.Errorf("generated key is %d bytes, want 32", len(key))
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	key := []byte(rawSecret)
	otherKey := mustParse(t, specSecret)
	body := []byte(`{"event":"message.received"}`)
	const id = "msg_2abc"

	signed := func(keys [][]byte, ts time.Time) http.Header {
		h := http.Header{}
		SetHeaders(h, keys, id, ts, body)
		return h
	}

	tests := map[string]struct {
		header    http.Header
		body      []byte
		keys      [][]byte
		tolerance time.Duration
		wantErr   error
	}{
		"a request signed with the verifier's key is accepted": {
			header: signed([][]byte{key}, now),
		},
		"a timestamp exactly at the tolerance is accepted": {
			header: signed([][]byte{key}, now.Add(-DefaultTolerance)),
		},
		"a rotation list where only the second signature matches is accepted": {
			header: signed([][]byte{otherKey, key}, now),
		},
		"a verifier holding old and new keys accepts the old one": {
			header: signed([][]byte{key}, now),
			keys:   [][]byte{otherKey, key},
		},
		"extra spaces and malformed entries in the list are ignored": {
			header: func() http.Header {
				h := signed([][]byte{key}, now)
				h.Set(HeaderSignature, "garbage  v1 v1,AAAA  "+h.Get(HeaderSignature)+" ")
				return h
			}(),
		},
		"a custom tolerance is honoured": {
			header:    signed([][]byte{key}, now.Add(-10*time.Second)),
			tolerance: 5 * time.Second,
			wantErr:   ErrTimestampTooOld,
		},
		"a request signed with a different secret is rejected": {
			header:  signed([][]byte{otherKey}, now),
			wantErr: ErrNoMatchingSignature,
		},
		"a tampered body is rejected": {
			header:  signed([][]byte{key}, now),
			body:    []byte(`{"event":"message.deleted"}`),
			wantErr: ErrNoMatchingSignature,
		},
		"a tampered id is rejected": {
			header: func() http.Header {
				h := signed([][]byte{key}, now)
				h.Set(HeaderID, "msg_other")
				return h
			}(),
			wantErr: ErrNoMatchingSignature,
		},
		"a tampered timestamp within tolerance is rejected": {
			header: func() http.Header {
				h := signed([][]byte{key}, now)
				h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()-1, 10))
				return h
			}(),
			wantErr: ErrNoMatchingSignature,
		},
		"a timestamp older than the tolerance is rejected": {
			header:  signed([][]byte{key}, now.Add(-DefaultTolerance-time.Second)),
			wantErr: ErrTimestampTooOld,
		},
		"a timestamp in the future beyond the tolerance is rejected": {
			header:  signed([][]byte{key}, now.Add(DefaultTolerance+time.Second)),
			wantErr: ErrTimestampTooNew,
		},
		"a non-numeric timestamp is rejected": {
			header: func() http.Header {
				h := signed([][]byte{key}, now)
				h.Set(HeaderTimestamp, "2023-11-14T22:13:20Z")
				return h
			}(),
			wantErr: ErrInvalidTimestamp,
		},
		"a missing webhook-id is rejected": {
			header:  without(signed([][]byte{key}, now), HeaderID),
			wantErr: ErrMissingHeaders,
		},
		"a missing webhook-timestamp is rejected": {
			header:  without(signed([][]byte{key}, now), HeaderTimestamp),
			wantErr: ErrMissingHeaders,
		},
		"a missing webhook-signature is rejected": {
			header:  without(signed([][]byte{key}, now), HeaderSignature),
			wantErr: ErrMissingHeaders,
		},
		"a signature list with only a v2 entry is rejected": {
			header: func() http.Header {
				h := signed([][]byte{key}, now)
				h.Set(HeaderSignature, "v2,"+strings.TrimPrefix(h.Get(HeaderSignature), "v1,"))
				return h
			}(),
			wantErr: ErrNoMatchingSignature,
		},
		"a verifier without keys rejects everything": {
			header:  signed([][]byte{key}, now),
			keys:    [][]byte{},
			wantErr: ErrNoSecret,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			keys := tc.keys
			if keys == nil {
				keys = [][]byte{key}
			}
			b := tc.body
			if b == nil {
				b = body
			}
			v := &Verifier{Keys: keys, Tolerance: tc.tolerance, Now: func() time.Time { return now }}
			err := v.Verify(tc.header, b)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Verify = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				assertNoLeak(t, err, rawSecret, specSecret)
			}
		})
	}
}

func without(h http.Header, name string) http.Header {
	h.Del(name)
	return h
}

func TestInteropOfficialLibraryVerifiesOurs(t *testing.T) {
	body := []byte(`{"type":"message.created","data":{"n":1}}`)
	const id = "msg_interop"

	tests := map[string]struct {
		signKeys [][]byte
		official func() (*standardwebhooks.Webhook, error)
	}{
		"a whsec secret": {
			signKeys: [][]byte{mustParse(t, specSecret)},
			official: func() (*standardwebhooks.Webhook, error) { return standardwebhooks.NewWebhook(specSecret) },
		},
		"a raw secret": {
			signKeys: [][]byte{mustParse(t, rawSecret)},
			official: func() (*standardwebhooks.Webhook, error) { return standardwebhooks.NewWebhookRaw([]byte(rawSecret)) },
		},
		"a rotation header whose matching entry is the second": {
			signKeys: [][]byte{mustParse(t, rawSecret), mustParse(t, specSecret)},
			official: func() (*standardwebhooks.Webhook, error) { return standardwebhooks.NewWebhook(specSecret) },
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			wh, err := tc.official()
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			SetHeaders(h, tc.signKeys, id, time.Now(), body)
			if err := wh.Verify(body, h); err != nil {
				t.Fatalf("official library rejected our request: %v", err)
			}
			if err := wh.Verify(append(body, ' '), h); err == nil {
				t.Fatal("official library accepted a tampered body")
			}
		})
	}
}

func TestInteropWeVerifyOfficialLibrary(t *testing.T) {
	body := []byte(specBody)
	wh, err := standardwebhooks.NewWebhook(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now()
	sig, err := wh.Sign(specID, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, specID)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)

	keys, err := ParseSecrets(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	v := &Verifier{Keys: keys}
	if err := v.Verify(h, body); err != nil {
		t.Fatalf("Verify rejected the official library's signature: %v", err)
	}
	if got := Sign(keys, specID, ts, body); got != sig {
		t.Errorf("Sign = %q, official library = %q", got, sig)
	}
}

// Signatures made at once from many goroutines with reused HMAC states
// equal those of a fresh HMAC each, also after the key cache starts again.
func TestSignWithReusedStatesConcurrently(t *testing.T) {
	keys := [][]byte{[]byte("key-one-0123456789abcdef"), []byte("key-two"), bytes.Repeat([]byte{0xfe}, 100)}
	ts := time.Unix(1764324902, 0)
	want := func(key []byte, id string, body []byte) string {
		m := hmac.New(sha256.New, key)
		fmt.Fprintf(m, "%s.%d.%s", id, ts.Unix(), body)
		return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 300 {
				if g == 0 && i == 150 {
					// Fill the cache past its bound: it starts again.
					for k := range maxKeyedPools + 1 {
						_ = Sign([][]byte{[]byte(fmt.Sprintf("filler-%d", k))}, "x", ts, nil)
					}
				}
				key := keys[(g+i)%len(keys)]
				id := fmt.Sprintf("msg_%d_%d", g, i)
				body := []byte(fmt.Sprintf(`{"n":%d}`, i))
				if got := Sign([][]byte{key}, id, ts, body); got != want(key, id, body) {
					t.Errorf("goroutine %d, signature %d: got %s, want %s", g, i, got, want(key, id, body))
					return
				}
			}
		})
	}
	wg.Wait()
}

// decodedLen is the length a whsec_ secret decodes to, or 0.
func decodedLen(s string) int {
	enc, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return 0
	}
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(enc, "="))
	if err != nil {
		return 0
	}
	return len(b)
}
