package ingest

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
)

// jwtShaped reports whether token looks like a JSON Web Token in compact
// serialization, the form of every Kubernetes ServiceAccount token: three
// non-empty segments of unpadded base64url separated by dots. It reads
// nothing else, so it costs next to nothing; only such tokens are sent to
// a TokenReview.
func jwtShaped(token string) bool {
	if strings.Count(token, ".") != 2 {
		return false
	}
	for seg := range strings.SplitSeq(token, ".") {
		if seg == "" {
			return false
		}
		for i := range len(seg) {
			if c := seg[i]; (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}

// claimsAudience reports whether the payload of a JWT-shaped token claims
// the audience want ("aud", a string or a list of strings). The claim is
// not verified here: it only chooses the TokenReview, which verifies it.
func claimsAudience(token, want string) bool {
	_, rest, _ := strings.Cut(token, ".")
	payload, _, _ := strings.Cut(rest, ".")
	if base64.RawURLEncoding.DecodedLen(len(payload)) > maxTokenBytes {
		return false
	}
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return false
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil || len(claims.Aud) == 0 {
		return false
	}
	var one string
	if err := json.Unmarshal(claims.Aud, &one); err == nil {
		return one == want
	}
	var many []string
	if err := json.Unmarshal(claims.Aud, &many); err == nil {
		return slices.Contains(many, want)
	}
	return false
}
