package controller

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// secretValues remembers, of each Secret a WebhookConfig named, the values of
// the keys WebhookConfigs asked for, its owners and the resourceVersion they
// were read at. A reconcile whose Secret's resourceVersion in the metadata
// cache is the one remembered takes the value from here instead of the API
// server: the same resourceVersion is the same content. So a restart reads
// each Secret once (the registry rebuild) rather than twice, and WebhookConfigs
// sharing a Secret read it once between them. It holds only what the registry
// holds anyway, the signing secrets of WebhookConfigs, never a Secret no
// WebhookConfig names. Entries go when their Secret is found deleted.
type secretValues struct {
	mu sync.Mutex
	m  map[types.NamespacedName]secretValue
}

type secretValue struct {
	resourceVersion string
	owners          []metav1.OwnerReference
	// annotations are the Secret's annotations the controller acts on
	// (the rotation's end), not the others.
	annotations map[string]string
	data        map[string][]byte // only the keys asked for
}

// keptAnnotations picks the annotations of a signing Secret the controller
// reads: the end of a rotation's grace period.
func keptAnnotations(all map[string]string) map[string]string {
	v, ok := all[webhooksv1alpha1.AnnotationRotationEndsAt]
	if !ok {
		return nil
	}
	return map[string]string{webhooksv1alpha1.AnnotationRotationEndsAt: v}
}

// get reads key's field dataKey: from the remembered values when metadata
// (a reader of the Secrets' metadata, the manager's cache) has the Secret at
// the remembered resourceVersion, else from secrets (uncached), remembering
// it. The returned Secret holds at most that one key, and of its
// annotations those keptAnnotations keeps.
func (v *secretValues) get(ctx context.Context, metadata, secrets client.Reader, key types.NamespacedName, dataKey string) (*corev1.Secret, error) {
	if metadata != nil {
		var pom metav1.PartialObjectMetadata
		pom.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		if err := metadata.Get(ctx, key, &pom); err == nil {
			if s, ok := v.lookup(key, pom.ResourceVersion, dataKey); ok {
				return s, nil
			}
		}
	}
	var secret corev1.Secret
	if err := secrets.Get(ctx, key, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			v.forget(key)
		}
		return nil, err
	}
	v.remember(key, &secret, dataKey)
	out := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{
		Namespace: secret.Namespace, Name: secret.Name, ResourceVersion: secret.ResourceVersion,
		OwnerReferences: secret.OwnerReferences, Annotations: keptAnnotations(secret.Annotations),
	}}
	if value, ok := secret.Data[dataKey]; ok {
		out.Data = map[string][]byte{dataKey: value}
	}
	return out, nil
}

func (v *secretValues) lookup(key types.NamespacedName, resourceVersion, dataKey string) (*corev1.Secret, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.m[key]
	if !ok || e.resourceVersion != resourceVersion {
		return nil, false
	}
	value, ok := e.data[dataKey]
	if !ok {
		return nil, false
	}
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name, ResourceVersion: resourceVersion, OwnerReferences: e.owners, Annotations: e.annotations},
		Data:       map[string][]byte{dataKey: value},
	}, true
}

// remember keeps secret's dataKey (when it has it) at its resourceVersion,
// with the keys already remembered at that same resourceVersion.
func (v *secretValues) remember(key types.NamespacedName, secret *corev1.Secret, dataKey string) {
	value, ok := secret.Data[dataKey]
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[types.NamespacedName]secretValue)
	}
	e := v.m[key]
	if e.resourceVersion != secret.ResourceVersion {
		e = secretValue{resourceVersion: secret.ResourceVersion, owners: secret.OwnerReferences, annotations: keptAnnotations(secret.Annotations), data: map[string][]byte{}}
	}
	if ok {
		e.data[dataKey] = value
	}
	v.m[key] = e
}

func (v *secretValues) forget(key types.NamespacedName) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.m, key)
}
