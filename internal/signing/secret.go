package signing

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

const (
	// SecretPrefix marks a secret whose remainder is the standard base64
	// encoding of the HMAC key.
	SecretPrefix = "whsec_"

	// MinRawSecretBytes is the minimum length in bytes of a secret that does
	// not start with SecretPrefix.
	MinRawSecretBytes = 16

	// minEncodedKeyBytes and maxEncodedKeyBytes bound the decoded length of
	// a SecretPrefix secret.
	minEncodedKeyBytes = 24
	maxEncodedKeyBytes = 64

	// generatedKeyBytes is the key length produced by GenerateSecret.
	generatedKeyBytes = 32
)

var (
	// ErrNoSecret is returned when a secret value is empty or whitespace
	// only, or a Verifier has no keys.
	ErrNoSecret = errors.New("no secret")

	// ErrSecretTooShort is returned for a secret without SecretPrefix that
	// is shorter than MinRawSecretBytes bytes.
	ErrSecretTooShort = errors.New("secret too short")

	// ErrSecretInvalid is returned for a SecretPrefix secret whose remainder
	// is not valid standard base64 or does not decode to 24..64 bytes.
	ErrSecretInvalid = errors.New("invalid whsec_ secret")
)

// ParseSecret turns one secret string into HMAC key bytes.
//
// A string starting with SecretPrefix must be followed by standard base64
// (with or without padding, no whitespace) that decodes to 24..64 bytes;
// those bytes are returned. Any other string of at least MinRawSecretBytes
// bytes is returned unchanged as the key bytes; it is not trimmed.
//
// The error is nil on success, otherwise it wraps ErrNoSecret (empty or
// whitespace only), ErrSecretInvalid or ErrSecretTooShort. Error messages
// never contain the secret, nor its length (they end up in status).
func ParseSecret(s string) ([]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, ErrNoSecret
	}
	encoded, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		if len(s) < MinRawSecretBytes {
			// The message gives the rule, not the secret's length, which
			// would tell whoever reads the status something about it.
			return nil, fmt.Errorf("%w: a secret without the %q prefix needs at least %d bytes", ErrSecretTooShort, SecretPrefix, MinRawSecretBytes)
		}
		return []byte(s), nil
	}
	// encoding/base64 silently skips '\r' and '\n'; reject all whitespace
	// explicitly so a secret is accepted only in its canonical form.
	if strings.IndexFunc(encoded, unicode.IsSpace) >= 0 {
		return nil, fmt.Errorf("%w: contains whitespace", ErrSecretInvalid)
	}
	enc := base64.RawStdEncoding
	if strings.HasSuffix(encoded, "=") {
		enc = base64.StdEncoding
	}
	key, err := enc.DecodeString(encoded)
	if err != nil {
		// base64.CorruptInputError only reports an offset, never the input.
		return nil, fmt.Errorf("%w: bad base64: %w", ErrSecretInvalid, err)
	}
	if len(key) < minEncodedKeyBytes || len(key) > maxEncodedKeyBytes {
		return nil, fmt.Errorf("%w: does not decode to %d..%d bytes", ErrSecretInvalid, minEncodedKeyBytes, maxEncodedKeyBytes)
	}
	return key, nil
}

// ParseSecrets parses the value stored in a Kubernetes Secret key: one or
// more secrets separated by whitespace (spaces, tabs or newlines). The first
// secret is the current one; the others remain valid during a rotation.
// Surrounding whitespace, such as a trailing newline, is ignored.
//
// On success it returns one key per secret, in the order given, and at least
// one key. Otherwise it returns nil and an error: ErrNoSecret if value holds
// no secret, or the ParseSecret error of the first invalid entry, wrapped
// with the entry's zero-based index (never its value).
func ParseSecrets(value string) ([][]byte, error) {
	entries := strings.Fields(value)
	if len(entries) == 0 {
		return nil, ErrNoSecret
	}
	keys := make([][]byte, 0, len(entries))
	for i, entry := range entries {
		key, err := ParseSecret(entry)
		if err != nil {
			return nil, fmt.Errorf("secret at index %d: %w", i, err)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// GenerateSecret returns a new secret "whsec_" + standard base64 of 32 bytes
// read from crypto/rand. The error is non-nil only if reading random bytes
// fails, in which case the string is empty.
func GenerateSecret() (string, error) {
	key := make([]byte, generatedKeyBytes)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return SecretPrefix + base64.StdEncoding.EncodeToString(key), nil
}
