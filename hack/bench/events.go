package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// The bench's events. Every event's data differs from every other's, so
// that the content check after each pass can tell a delivery that carries
// another event's data (a batch bug once did, validly signed, while every
// receiver only counted webhook-ids). They look like what WA Blast posts:
// message.sent (every eighth a message.delivered) with a per-event
// messageId, recipient and seq, sessions and campaigns with names of
// different lengths (half sent outside a campaign), on about a quarter a
// message text, some with non-ASCII characters, quotes, a newline or an
// ampersand; every fourth event carries its own timestamp with an offset
// and nanoseconds. The data is 120 to 263 bytes, 162 on average
// (payloadText says so in the report); before the content check every
// event's data was the same 158-byte object but for a 6-digit counter in
// messageId, so the figures stay comparable. Every event passes the
// catalog's fast schema check, as the old one did (events_test.go holds
// it to all of that).

// benchEvent is event i as a producer posts it, without an id.
func benchEvent(i int) testutil.Posted {
	h := mix(uint64(i))
	typ, at := "message.sent", "sentAt"
	if i%8 == 5 {
		typ, at = "message.delivered", "deliveredAt"
	}
	b := make([]byte, 0, 384)
	b = fmt.Appendf(b, `{"messageId":"3EB0%016X","sessionId":"%s","to":"+62%d"`,
		h, benchSessions[h>>8%uint64(len(benchSessions))], 81_000_000_000+h>>16%9_000_000_000)
	if c := benchCampaigns[h>>24%uint64(len(benchCampaigns))]; c != "" {
		b = fmt.Appendf(b, `,"campaignId":"%s"`, c)
	}
	b = append(b, `,"`...)
	b = append(b, at...)
	b = append(b, `":"`...)
	b = benchBase.Add(time.Duration(i)*37*time.Millisecond).AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, `","seq":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	if h>>32%4 == 0 {
		b = append(b, `,"text":`...)
		b = strconv.AppendQuote(b, fmt.Sprintf(benchTexts[h>>40%uint64(len(benchTexts))], i))
	}
	b = append(b, '}')
	ev := testutil.Posted{Type: typ, Data: b}
	if i%4 == 2 {
		ev.Timestamp = benchBase.Add(time.Duration(i) * 1234567 * time.Nanosecond).In(benchZone).Format(time.RFC3339Nano)
	}
	return ev
}

// benchEvents is events from to from+count-1.
func benchEvents(from, count int) []testutil.Posted {
	out := make([]testutil.Posted, count)
	for i := range out {
		out[i] = benchEvent(from + i)
	}
	return out
}

// payloadText describes the events in the report.
const payloadText = "message.sent events (every eighth a message.delivered), each with its own data: a per-event messageId, recipient and seq, sessions and campaigns with names of varying lengths, on about a quarter a message text (some non-ASCII, quoted, with a newline or an ampersand), every fourth with its own timestamp; data 120-263 bytes, 162 on average (before the bench checked content, every event's data was the same 158 bytes but for a counter)"

var (
	benchBase = time.Date(2026, 11, 28, 10, 15, 0, 0, time.UTC)
	benchZone = time.FixedZone("WIB", 7*3600)
)

var benchSessions = []string{"sess_sales_1", "sess_cs_2", "sess_promo_jkt_03", "s1"}

var benchCampaigns = []string{"cmp_2026_11_promo", "", "cmp_harbolnas_1212_flash", ""}

// benchTexts are message texts; %d is the event's number.
var benchTexts = []string{
	"Halo kak, pesanan #%d sudah dikirim 🚚",
	"Promo 11.11: diskon 50%% untuk pelanggan ke-%d!",
	"Terima kasih, \"Budi\" & tim (%d)\nSampai jumpa",
	"OTP Anda: %06d",
	"Pengingat: tagihan %d jatuh tempo besok. Balas STOP untuk berhenti.",
	"こんにちは %d ✓",
}

// mix is splitmix64's finaliser: a bijection, so messageIds never repeat.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
