package ingest

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkKubeAuthorizeCached is an authorization decided from the cache:
// the cost the auth path adds to every request of a producer whose token
// was reviewed within the TTL.
func BenchmarkKubeAuthorizeCached(b *testing.B) {
	f := newAuthFixture(b)
	ctx := context.Background()
	if err := f.auth.Authorize(ctx, saToken, "a"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.auth.Authorize(ctx, saToken, "a"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKubeAuthorizeCachedParallel is BenchmarkKubeAuthorizeCached
// from every core at once, over 100 cached tokens: the cache's lock.
func BenchmarkKubeAuthorizeCachedParallel(b *testing.B) {
	f := newAuthFixture(b)
	ctx := context.Background()
	tokens := make([]string, 100)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("%s-%d", saToken, i)
		_ = f.auth.Authorize(ctx, tokens[i], "a") // a cached deny is a decision too
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			_ = f.auth.Authorize(ctx, tokens[i%len(tokens)], "a")
			i++
		}
	})
}
