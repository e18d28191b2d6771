package signing

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"net/http"
	"strconv"
	"strings"
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
	m, done := keyedMAC(key)
	defer done()
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	var buf [sha256.Size]byte
	sum := m.Sum(buf[:0])
	out := make([]byte, base64.StdEncoding.EncodedLen(len(sum)))
	base64.StdEncoding.Encode(out, sum)
	return out
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
