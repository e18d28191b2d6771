package store

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendLogRecords appends the JSON array of records to dst: the same
// document json.Marshal(records) gives, field for field (a test decodes
// both and compares them), without reflection, and with a Stored record's
// body copied as it is rather than validated and compacted a second time
// (StoredRecord kept it only if it was valid JSON; the envelopes the
// dispatcher builds are compact).
func appendLogRecords(dst []byte, records []LogRecord) []byte {
	dst = append(dst, '[')
	for i := range records {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendLogRecord(dst, &records[i])
	}
	return append(dst, ']')
}

func appendLogRecord(b []byte, r *LogRecord) []byte {
	b = append(b, `{"kind":`...)
	b = appendJSONString(b, r.Kind)
	b = append(b, `,"uid":`...)
	b = appendJSONString(b, string(r.UID))
	b = append(b, `,"eventID":`...)
	b = appendJSONString(b, r.EventID)
	b = append(b, `,"eventType":`...)
	b = appendJSONString(b, r.EventType)
	b = appendStringField(b, "acceptedAt", r.AcceptedAt)
	if len(r.Body) > 0 {
		b = append(b, `,"body":`...)
		b = append(b, r.Body...)
	}
	b = appendIntField(b, "bodyBytes", int64(r.BodyBytes))
	b = appendStringField(b, "bodySHA256", r.BodySHA256)
	b = appendStringField(b, "origin", r.Origin)
	b = appendIntField(b, "attempt", int64(r.Attempt))
	if r.Attempted {
		b = append(b, `,"attempted":true`...)
	}
	b = appendTimeField(b, "time", r.Time)
	b = appendIntField(b, "durationMS", r.DurationMS)
	b = appendStringField(b, "host", r.Host)
	b = appendIntField(b, "statusCode", int64(r.StatusCode))
	b = appendStringField(b, "result", string(r.Result))
	b = appendStringField(b, "error", r.Error)
	if len(r.ResponseHeaders) > 0 {
		b = append(b, `,"responseHeaders":{`...)
		keys := make([]string, 0, len(r.ResponseHeaders))
		for k := range r.ResponseHeaders {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, r.ResponseHeaders[k])
		}
		b = append(b, '}')
	}
	b = appendStringField(b, "responseBody", r.ResponseBody)
	b = appendTimeField(b, "nextAttempt", r.NextAttempt)
	return append(b, '}')
}

// appendStringField appends ,"name":"v" unless v is empty (omitempty).
func appendStringField(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

// appendIntField appends ,"name":v unless v is 0 (omitempty).
func appendIntField(b []byte, name string, v int64) []byte {
	if v == 0 {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

// appendTimeField appends ,"name":"<RFC 3339>" unless t is zero
// (omitzero), as time.Time's MarshalJSON writes it.
func appendTimeField(b []byte, name string, t time.Time) []byte {
	if t.IsZero() {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':', '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD (as
// encoding/json does), and U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
