package deliveryapi

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apiserver/pkg/endpoints/handlers/responsewriters"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

// SinceParam is the list query parameter that keeps the deliveries first
// accepted at or after a time: an RFC 3339 time, or a Go duration (or a
// whole number of days, "2d") before now. Kubernetes' ListOptions has no
// place for it, so a filter in front of the API handlers reads it from the
// URL and hands it to List in the request's context.
const SinceParam = "since"

type sinceKey struct{}

// SinceFrom returns the since of a list request (zero and false when it has none).
func SinceFrom(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(sinceKey{}).(time.Time)
	return t, ok
}

// WithSince returns ctx carrying since for List.
func WithSince(ctx context.Context, since time.Time) context.Context {
	return context.WithValue(ctx, sinceKey{}, since)
}

// ParseSince parses a since value: an RFC 3339 time, or a positive Go
// duration or whole number of days before now.
func ParseSince(value string, now time.Time) (time.Time, error) {
	value = strings.TrimSpace(value)
	d, err := time.ParseDuration(value)
	if err != nil {
		if days, found := strings.CutSuffix(value, "d"); found {
			if n, aerr := strconv.Atoi(days); aerr == nil && n < 1<<16 && n > -1<<16 {
				d, err = time.Duration(n)*24*time.Hour, nil
			}
		}
	}
	if err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("since=%s: a duration must be positive", value)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, value)
	if err != nil {
		return time.Time{}, fmt.Errorf("since=%q is neither an RFC 3339 time nor a duration such as 1h, 30m or 2d", value)
	}
	return t, nil
}

// withSince reads ?since= of list requests into their context; a value it
// cannot parse is answered 400 Bad Request.
func withSince(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := r.URL.Query()[SinceParam]
		info, _ := genericapirequest.RequestInfoFrom(r.Context())
		if !ok || len(v) == 0 || info == nil || info.Verb != "list" {
			h.ServeHTTP(w, r)
			return
		}
		since, err := ParseSince(v[0], time.Now())
		if err != nil {
			responsewriters.ErrorNegotiated(apierrors.NewBadRequest(err.Error()), Codecs, deliveryv1alpha1.SchemeGroupVersion, w, r)
			return
		}
		h.ServeHTTP(w, r.WithContext(WithSince(r.Context(), since)))
	})
}
