package plugin

import (
	"strings"
	"testing"
	"time"
)

func TestParseSince(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC)
	tests := []struct {
		name    string
		value   string
		want    string
		wantErr string
	}{
		{name: "an hour counts back from now, truncated to the second", value: "1h", want: "2026-11-28T09:15:02Z"},
		{name: "a compound Go duration is accepted", value: "1h30m", want: "2026-11-28T08:45:02Z"},
		{name: "minutes are accepted", value: "45m", want: "2026-11-28T09:30:02Z"},
		{name: "a whole number of days is accepted", value: "2d", want: "2026-11-26T10:15:02Z"},
		{name: "surrounding whitespace is ignored", value: " 1h ", want: "2026-11-28T09:15:02Z"},
		{name: "an RFC 3339 time in UTC is kept as written", value: "2026-11-28T08:00:00Z", want: "2026-11-28T08:00:00Z"},
		{name: "an RFC 3339 time with an offset is kept as written", value: "2026-11-28T15:00:00+07:00", want: "2026-11-28T15:00:00+07:00"},
		{name: "an RFC 3339 time with fractional seconds is kept as written", value: "2026-11-28T08:00:00.5Z", want: "2026-11-28T08:00:00.5Z"},
		{name: "now itself is accepted", value: "2026-11-28T10:15:02.123456789Z", want: "2026-11-28T10:15:02.123456789Z"},
		{name: "an empty value is refused", value: "", wantErr: "--since is empty"},
		{name: "a zero duration is refused", value: "0s", wantErr: "must be a positive duration"},
		{name: "a negative duration is refused", value: "-1h", wantErr: "must be a positive duration"},
		{name: "zero days are refused", value: "0d", wantErr: "must be a positive duration"},
		{name: "a time in the future is refused", value: "2026-11-28T11:00:00Z", wantErr: "is in the future"},
		{name: "a date without a time is refused", value: "2026-11-28", wantErr: `invalid --since "2026-11-28"`},
		{name: "a time without a zone is refused", value: "2026-11-28T08:00:00", wantErr: "RFC 3339 time such as"},
		{name: "a word is refused with what is accepted", value: "yesterday", wantErr: "want a duration such as 30m, 1h or 2d"},
		{name: "fractional days are refused", value: "1.5d", wantErr: "invalid --since"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSince(tt.value, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSince(%q) = %q, %v; want an error containing %q", tt.value, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseSince(%q) = %q, %v; want %q", tt.value, got, err, tt.want)
			}
		})
	}
}

func TestTokenLayoutKeepsNineDigits(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{name: "nanoseconds are written in full", at: time.Date(2026, 11, 28, 10, 15, 2, 123456789, time.UTC), want: "2026-11-28T10:15:02.123456789Z"},
		{name: "trailing zeros are kept", at: time.Date(2026, 11, 28, 10, 15, 2, 120000000, time.UTC), want: "2026-11-28T10:15:02.120000000Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.at.UTC().Format(tokenLayout); got != tt.want {
				t.Fatalf("token = %q, want %q", got, tt.want)
			}
		})
	}
}
