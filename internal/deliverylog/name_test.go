package deliverylog

import (
	"strings"
	"testing"
)

func TestNameRoundTrips(t *testing.T) {
	for _, tc := range []struct{ webhook, id, name string }{
		{"crm", "evt-1", "crm.evt-1"},
		{"crm", "Order.1", "crm._4frder_2e1"},
		{"a.b.c", "x_y/z", "a.b.c.x_5fy_2fz"},
		{"crm", "üñí", "crm._c3_bc_c3_b1_c3_ad"},
		{"crm", "%..", "crm._25_2e_2e"},
	} {
		if got := Name(tc.webhook, tc.id); got != tc.name {
			t.Errorf("Name(%q, %q) = %q, want %q", tc.webhook, tc.id, got, tc.name)
		}
		w, id, err := ParseName(tc.name)
		if err != nil || w != tc.webhook || id != tc.id {
			t.Errorf("ParseName(%q) = %q, %q, %v; want %q, %q", tc.name, w, id, err, tc.webhook, tc.id)
		}
		if strings.ContainsAny(tc.name, "/%") {
			t.Errorf("%q is not a valid path segment", tc.name)
		}
	}
}

func TestParseNameRejects(t *testing.T) {
	for name, why := range map[string]string{
		"crm":      "no dot",
		"crm.":     "empty event id",
		".evt":     "empty webhook",
		"crm.Evt":  "uppercase unescaped",
		"crm.a_2":  "short escape",
		"crm.a_zz": "not hex",
		"crm.a_2E": "uppercase hex",
		"crm._61":  "escaped a letter that needs no escape (two names for one id)",
		"crm.a b":  "space",
	} {
		if w, id, err := ParseName(name); err == nil {
			t.Errorf("ParseName(%q) = %q, %q; want an error (%s)", name, w, id, why)
		}
	}
}
