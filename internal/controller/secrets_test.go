package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fakeSecrets is one Secret served to secretValues: its metadata (what the
// manager's cache would hold) and, counted, its full reads.
type fakeSecrets struct {
	secret *corev1.Secret // nil: not found
	reads  int
}

type metadataReader struct{ f *fakeSecrets }

func (m metadataReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	if m.f.secret == nil {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	obj.(*metav1.PartialObjectMetadata).ObjectMeta = *m.f.secret.ObjectMeta.DeepCopy()
	return nil
}

func (m metadataReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	panic("not used")
}

type secretReader struct{ f *fakeSecrets }

func (s secretReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	s.f.reads++
	if s.f.secret == nil {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	s.f.secret.DeepCopyInto(obj.(*corev1.Secret))
	return nil
}

func (s secretReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	panic("not used")
}

func TestSecretValuesReadASecretOncePerResourceVersion(t *testing.T) {
	ctx := context.Background()
	key := types.NamespacedName{Namespace: "shop", Name: "crm"}
	f := &fakeSecrets{secret: &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "crm", ResourceVersion: "1"},
		Data:       map[string][]byte{"secret": []byte("first"), "other": []byte("not asked for")},
	}}
	var v secretValues
	get := func(dataKey string, wantValue string, wantReads int) {
		t.Helper()
		s, err := v.get(ctx, metadataReader{f}, secretReader{f}, key, dataKey)
		if err != nil {
			t.Fatalf("get %s: %v", dataKey, err)
		}
		if got := string(s.Data[dataKey]); got != wantValue {
			t.Errorf("get %s = %q, want %q", dataKey, got, wantValue)
		}
		if len(s.Data) > 1 {
			t.Errorf("get %s returned keys %v, want only the one asked for", dataKey, s.Data)
		}
		if f.reads != wantReads {
			t.Errorf("after get %s: %d reads from the API server, want %d", dataKey, f.reads, wantReads)
		}
	}

	get("secret", "first", 1)
	get("secret", "first", 1) // same resourceVersion: remembered
	get("other", "not asked for", 2)
	get("other", "not asked for", 2)
	get("secret", "first", 2) // still remembered beside the other key

	f.secret.ResourceVersion, f.secret.Data["secret"] = "2", []byte("second")
	get("secret", "second", 3)
	get("secret", "second", 3)

	if v.m[key].data["other"] != nil {
		t.Error("a key asked for at an older resourceVersion is still remembered")
	}

	// Deleted: not found, and forgotten.
	f.secret = nil
	if _, err := v.get(ctx, metadataReader{f}, secretReader{f}, key, "secret"); !apierrors.IsNotFound(err) {
		t.Fatalf("get of a deleted Secret = %v, want not found", err)
	}
	if _, ok := v.m[key]; ok {
		t.Error("a deleted Secret is still remembered")
	}

	// Without a metadata reader every get reads the API server.
	f.secret = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "crm", ResourceVersion: "3"}, Data: map[string][]byte{"secret": []byte("third")}}
	reads := f.reads
	for range 2 {
		if _, err := v.get(ctx, nil, secretReader{f}, key, "secret"); err != nil {
			t.Fatal(err)
		}
	}
	if f.reads != reads+2 {
		t.Errorf("%d reads without a metadata reader, want 2", f.reads-reads)
	}
}
