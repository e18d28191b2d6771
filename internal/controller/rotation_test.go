package controller

import (
	"bytes"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

func TestRotationKeys(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	two := [][]byte{[]byte("new-key-0123456789"), []byte("old-key-0123456789")}
	ends := func(at time.Time) map[string]string {
		return map[string]string{webhooksv1alpha1.AnnotationRotationEndsAt: at.Format(time.RFC3339)}
	}
	for _, tc := range []struct {
		name        string
		keys        [][]byte
		annotations map[string]string
		wantKeys    int
		wantEnd     time.Time
	}{
		{name: "no annotation: every key signs, no rotation to end", keys: two, wantKeys: 2},
		{name: "grace running: every key signs until the end", keys: two, annotations: ends(now.Add(time.Hour)), wantKeys: 2, wantEnd: now.Add(time.Hour)},
		{name: "grace over: the newest alone signs", keys: two, annotations: ends(now.Add(-time.Second)), wantKeys: 1},
		{name: "grace ending this instant: the newest alone", keys: two, annotations: ends(now), wantKeys: 1},
		{name: "one key: nothing to rotate", keys: two[:1], annotations: ends(now.Add(time.Hour)), wantKeys: 1},
		{name: "a value that is not a time is ignored", keys: two, annotations: map[string]string{webhooksv1alpha1.AnnotationRotationEndsAt: "tomorrow"}, wantKeys: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys, end := rotationKeys(tc.keys, tc.annotations, now)
			if len(keys) != tc.wantKeys || !bytes.Equal(keys[0], tc.keys[0]) || !end.Equal(tc.wantEnd) {
				t.Errorf("rotationKeys = %d keys (first %q), end %v; want %d keys, the newest first, end %v", len(keys), keys[0], end, tc.wantKeys, tc.wantEnd)
			}
		})
	}
}
