package testutil

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// VariedEvents returns n events that a content check can tell apart: every
// one's data differs from every other's, in length (from a few bytes to a
// few kilobytes), in member order and whitespace, and holds unicode,
// escapes, characters encoding/json escapes (<, >, &, U+2028), nested
// objects and arrays, numbers written in several ways, booleans and null.
// The types cycle through the catalog's postable types, each event's data
// built from its type's example so it matches the schema. Every third event
// has a timestamp with microseconds and an offset. prefix makes the ids
// (prefix-<i>) and the data unique across calls.
func VariedEvents(prefix string, n int) []Posted {
	out := make([]Posted, n)
	for i := range out {
		out[i] = VariedEvent(prefix, i)
	}
	return out
}

// VariedEvent returns event i of VariedEvents(prefix, n) (any n > i): id
// prefix-<i>, data and timestamp built the same way. With types, its type
// is types[i%len(types)] instead, and its data is built from that type's
// example: each must be a type a producer may post. Tests that make their
// events one at a time, or whose endpoints subscribe to some types only,
// use it; data stays distinct across prefixes and indexes.
func VariedEvent(prefix string, i int, types ...string) Posted {
	var t catalog.Type
	if len(types) == 0 {
		all := postableTypes()
		t = all[i%len(all)]
	} else {
		var ok bool
		if t, ok = catalog.Lookup(types[i%len(types)]); !ok || t.Reserved {
			panic(fmt.Sprintf("VariedEvent: %q is not a type a producer may post", types[i%len(types)]))
		}
	}
	ev := Posted{
		ID:   fmt.Sprintf("%s-%d", prefix, i),
		Type: t.Name,
		Data: variedData(t, prefix, i),
	}
	if i%3 == 1 {
		ts := time.Date(2026, 11, 28, 10, 15, 2, 0, time.FixedZone("", 7*3600)).
			Add(time.Duration(i) * 1234567 * time.Microsecond / 1000)
		ev.Timestamp = ts.Format(time.RFC3339Nano)
	}
	return ev
}

// postableTypes returns the catalog's types a producer may post, in
// catalog order.
func postableTypes() []catalog.Type {
	var types []catalog.Type
	for _, t := range catalog.Types() {
		if !t.Reserved {
			types = append(types, t)
		}
	}
	return types
}

// notes are strings of the kinds a content check must see survive.
var notes = []string{
	"",
	"plain ascii",
	"Halo, pesanan Anda sudah dikirim 🚚 — terima kasih!",
	"quote \" backslash \\ slash / tab \t newline \n cr \r",
	"html <b>bold</b> & <i>x</i>",
	"line separator \u2028 paragraph \u2029 end",
	"control \u0001\u001f and nul-free",
	"日本語のテキストと emoji 👍🏽 and combining é",
}

// variedData builds data for event i of type t: the example's members, the
// ids made unique, and extra members whose content depends on i.
func variedData(t catalog.Type, prefix string, i int) json.RawMessage {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(t.Example))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		panic(fmt.Sprintf("example of %s: %v", t.Name, err))
	}
	for _, k := range []string{"messageId", "campaignId", "sessionId"} {
		if _, ok := m[k]; ok {
			m[k] = fmt.Sprintf("%s_%s_%d", k, prefix, i)
		}
	}
	m["seq"] = i
	m["note"] = notes[i%len(notes)] + strings.Repeat(fmt.Sprintf("·%d", i), (i*7)%97)
	switch i % 4 {
	case 0:
		m["nested"] = map[string]any{"a": []any{json.Number("1"), json.Number("2.50"), json.Number("-3e2"), true, nil, "x"}, "b": map[string]any{"c": map[string]any{"d": i}}}
	case 1:
		m["nested"] = []any{map[string]any{"k": "v"}, []any{}, map[string]any{}, json.Number("12345678901234567890")}
	case 2:
		m["flag"], m["nothing"] = i%8 == 2, nil
	case 3:
		m["big"] = strings.Repeat("x", 1000+i%3000)
	}
	body, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	if i%5 == 3 {
		// Whitespace (spaces and tabs, so it stays one NDJSON line): the
		// API compacts it, the value stays. json.Marshal escapes newlines
		// in strings, so every newline Indent writes is whitespace.
		var b bytes.Buffer
		_ = json.Indent(&b, body, " ", "\t")
		body = bytes.ReplaceAll(b.Bytes(), []byte("\n"), []byte(" "))
	}
	if i%6 == 4 {
		// Members in reverse order of the sorted ones json.Marshal wrote.
		body = reverseMembers(m)
	}
	return body
}

// reverseMembers writes m's members in reverse key order.
func reverseMembers(m map[string]any) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 0; i < len(keys); i++ {
		for j := i + 1; j < len(keys); j++ {
			if keys[j] > keys[i] {
				keys[i], keys[j] = keys[j], keys[i]
			}
		}
	}
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(mustMarshal(k))
		b.WriteByte(':')
		b.Write(mustMarshal(m[k]))
	}
	b.WriteByte('}')
	return b.Bytes()
}
