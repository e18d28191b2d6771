// Package receiver verifies WA Blast webhook deliveries (Standard Webhooks
// v1) with the Go standard library only. docs/events.md shows this file.
package receiver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Verify checks one delivery. secret is the value of the WebhookConfig's
// signing Secret key; body is the raw request body, before any JSON parsing.
func Verify(secret string, h http.Header, body []byte, now time.Time) error {
	secret = strings.TrimSpace(secret)
	key := []byte(secret) // a plain secret of 16 bytes or more is the key itself
	if b64, ok := strings.CutPrefix(secret, "whsec_"); ok {
		var err error // a whsec_ secret is the base64 of the key
		if key, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(b64, "=")); err != nil {
			return errors.New("malformed whsec_ secret")
		}
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	sent, err := strconv.ParseInt(ts, 10, 64)
	if id == "" || err != nil {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	if d := now.Sub(time.Unix(sent, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("webhook-timestamp is more than 5 minutes away: possible replay")
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	// During a secret rotation the header holds one signature per secret.
	for _, sig := range strings.Fields(h.Get("webhook-signature")) {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return errors.New("no valid signature")
}
