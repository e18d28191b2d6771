package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// HeaderID is the header carrying the message id, identical across
	// retries of the same message.
	HeaderID = "webhook-id"

	// HeaderTimestamp is the header carrying the attempt time in Unix
	// seconds, as a decimal integer.
	HeaderTimestamp = "webhook-timestamp"

	// HeaderSignature is the header carrying the space-separated list of
	// "v1,<base64 signature>" entries.
	HeaderSignature = "webhook-signature"

	// signatureVersion is the only signature scheme this package produces
	// and accepts.
	signatureVersion = "v1"
)

// Sign returns the webhook-signature header value for one attempt: for each
// key, "v1,<base64(HMAC-SHA256(key, id + "." + unixSeconds + "." + body))>",
// joined by single spaces in key order. timestamp is truncated to whole
// seconds. It returns "" when keys is empty.
func Sign(keys [][]byte, id string, timestamp time.Time, body []byte) string {
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	var b strings.Builder
	for i, key := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(signatureVersion)
		b.WriteByte(',')
		b.Write(mac(key, id, ts, body))
	}
	return b.String()
}

// SetHeaders sets HeaderID to id, HeaderTimestamp to the Unix seconds of
// timestamp in decimal, and HeaderSignature to Sign(keys, id, timestamp,
// body) on h, replacing any previous values. Call it once per delivery
// attempt with that attempt's time.
func SetHeaders(h http.Header, keys [][]byte, id string, timestamp time.Time, body []byte) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(timestamp.Unix(), 10))
	h.Set(HeaderSignature, Sign(keys, id, timestamp, body))
}

// mac returns the standard base64 encoding of
// HMAC-SHA256(key, id + "." + timestamp + "." + body).
func mac(key []byte, id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	sum := m.Sum(nil)
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum)
	return out
}
