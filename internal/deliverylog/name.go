package deliverylog

import (
	"fmt"
	"strings"

	"github.com/wablast/webhook-operator/internal/store"
)

// Name is the WebhookDelivery name of the delivery of event eventID to the
// WebhookConfig webhook: "<webhook>.<escaped event id>". The event id is
// escaped so that the name is a valid path segment and splits back
// unambiguously: lowercase letters, digits and "-" stay, every other byte
// becomes "_" and two lowercase hex digits (so "." is "_2e", "A" is "_41").
// A WebhookConfig's name has no "_" and the escaped id no ".", so the name
// splits at its last ".".
func Name(webhook, eventID string) string {
	return webhook + "." + store.EscapeEventID(eventID)
}

// ParseName splits a WebhookDelivery name into the WebhookConfig's name and
// the event id; it fails for a name Name cannot have made.
func ParseName(name string) (webhook, eventID string, err error) {
	dot := strings.LastIndexByte(name, '.')
	if dot <= 0 || dot == len(name)-1 {
		return "", "", fmt.Errorf("%q is not <webhookconfig>.<event id>", name)
	}
	webhook, enc := name[:dot], name[dot+1:]
	out := make([]byte, 0, len(enc))
	for i := 0; i < len(enc); i++ {
		c := enc[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-':
			out = append(out, c)
		case c == '_' && i+2 < len(enc) && unhex(enc[i+1]) >= 0 && unhex(enc[i+2]) >= 0:
			v := byte(unhex(enc[i+1])<<4 | unhex(enc[i+2]))
			if v >= 'a' && v <= 'z' || v >= '0' && v <= '9' || v == '-' {
				return "", "", fmt.Errorf("%q: %q is escaped but needs no escape", name, enc[i:i+3])
			}
			out = append(out, v)
			i += 2
		default:
			return "", "", fmt.Errorf("%q: the event id part has %q where a lowercase letter, digit, \"-\" or an escape \"_xx\" (lowercase hex) belongs", name, enc[i:])
		}
	}
	return webhook, string(out), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	}
	return -1
}
