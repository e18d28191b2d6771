package ingest

import (
	"context"
	"errors"
	"net/http"
	"strings"
)

var (
	// ErrUnauthenticated is wrapped by an Authenticator's error when the
	// token is not valid: the API answers 401.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden is wrapped by an Authenticator's error when the token is
	// valid but may not post events in the namespace: the API answers 403.
	ErrForbidden = errors.New("forbidden")
)

// Authenticator decides whether a bearer token may post events into a
// namespace.
type Authenticator interface {
	// Authorize returns nil when token may post events in namespace. It
	// returns an error wrapping ErrUnauthenticated when the token is not
	// valid, one wrapping ErrForbidden when it is valid but not for this
	// namespace, and any other error when it could not decide (the API then
	// answers 503 and the client retries). Errors never contain the token.
	Authorize(ctx context.Context, token, namespace string) error
}

// AuthenticatorFunc adapts a function to the Authenticator interface.
type AuthenticatorFunc func(ctx context.Context, token, namespace string) error

// Authorize calls f(ctx, token, namespace).
func (f AuthenticatorFunc) Authorize(ctx context.Context, token, namespace string) error {
	return f(ctx, token, namespace)
}

// maxTokenBytes bounds a bearer token; Kubernetes tokens are about 1 KiB.
const maxTokenBytes = 8 << 10

// bearerToken extracts the token of an "Authorization: Bearer <token>"
// header. The scheme is case-insensitive. On failure it returns an apiError
// (401) that does not quote the header.
func bearerToken(r *http.Request) (string, *apiError) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated,
			"no credentials: send \"Authorization: Bearer <token>\" with a ServiceAccount token or a static ingest token")
	}
	if len(values) > 1 {
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated, "more than one Authorization header")
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	token = strings.TrimSpace(token)
	switch {
	case !strings.EqualFold(scheme, "Bearer"):
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated,
			"the Authorization header must use the Bearer scheme: \"Authorization: Bearer <token>\"")
	case token == "":
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated, "the bearer token is empty")
	case len(token) > maxTokenBytes:
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated, "the bearer token is too long")
	case strings.ContainsAny(token, " \t"):
		return "", newError(http.StatusUnauthorized, CodeUnauthenticated, "the bearer token contains whitespace")
	}
	return token, nil
}
