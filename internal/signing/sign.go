package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"net/http"
	"strconv"
	"sync"
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
	return sign(keys, id, strconv.FormatInt(timestamp.Unix(), 10), body)
}

// The canonical forms of the headers, as http.Header.Set would write them.
var (
	canonicalID        = http.CanonicalHeaderKey(HeaderID)
	canonicalTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonicalSignature = http.CanonicalHeaderKey(HeaderSignature)
)

// SetHeaders sets HeaderID to id, HeaderTimestamp to the Unix seconds of
// timestamp in decimal, and HeaderSignature to Sign(keys, id, timestamp,
// body) on h, replacing any previous values. Call it once per delivery
// attempt with that attempt's time.
func SetHeaders(h http.Header, keys [][]byte, id string, timestamp time.Time, body []byte) {
	ts := strconv.FormatInt(timestamp.Unix(), 10)
	h[canonicalID] = []string{id}
	h[canonicalTimestamp] = []string{ts}
	h[canonicalSignature] = []string{sign(keys, id, ts, body)}
}

// signatureLen is the length of one "v1,<base64 of a SHA-256 MAC>" entry.
var signatureLen = len(signatureVersion) + 1 + base64.StdEncoding.EncodedLen(sha256.Size)

// sign is Sign with the timestamp already formatted.
func sign(keys [][]byte, id, timestamp string, body []byte) string {
	if len(keys) == 0 {
		return ""
	}
	out := make([]byte, 0, len(keys)*(signatureLen+1))
	for i, key := range keys {
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, signatureVersion...)
		out = append(out, ',')
		out = appendMAC(out, key, id, timestamp, body)
	}
	return string(out)
}

// appendMAC appends the standard base64 encoding of
// HMAC-SHA256(key, id + "." + timestamp + "." + body) to dst.
func appendMAC(dst, key []byte, id, timestamp string, body []byte) []byte {
	m, done := keyedMAC(key)
	defer done()
	var sep = [1]byte{'.'}
	m.Write([]byte(id))
	m.Write(sep[:])
	m.Write([]byte(timestamp))
	m.Write(sep[:])
	m.Write(body)
	var buf [sha256.Size]byte
	return base64.StdEncoding.AppendEncode(dst, m.Sum(buf[:0]))
}

// keyed holds the HMAC-SHA256 states of recently used keys. hmac.New hashes
// the key's inner and outer pads every time; a state from the pool only has
// them restored by Reset. Every delivery attempt and every verification
// signs, with a handful of keys, so this saves two SHA-256 blocks and the
// allocations of a new HMAC per signature.
var keyed struct {
	sync.RWMutex
	pools map[string]*sync.Pool
}

// maxKeyedPools bounds the keys whose states are kept; past it the cache
// starts again, so keys of deleted endpoints and old rotations do not pile up.
const maxKeyedPools = 4096

// keyedMAC returns a reset HMAC-SHA256 of key and the function that gives it back.
func keyedMAC(key []byte) (hash.Hash, func()) {
	keyed.RLock()
	p := keyed.pools[string(key)]
	keyed.RUnlock()
	if p == nil {
		k := string(key)
		keyed.Lock()
		if p = keyed.pools[k]; p == nil {
			if keyed.pools == nil || len(keyed.pools) >= maxKeyedPools {
				keyed.pools = map[string]*sync.Pool{}
			}
			p = &sync.Pool{New: func() any { return hmac.New(sha256.New, []byte(k)) }}
			keyed.pools[k] = p
		}
		keyed.Unlock()
	}
	m := p.Get().(hash.Hash)
	return m, func() {
		m.Reset()
		p.Put(m)
	}
}
