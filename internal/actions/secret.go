package actions

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// SigningSecretRef returns the Secret key whc is signed with: status.secretRef
// as recorded by the operator, else what the operator would use.
func SigningSecretRef(whc *webhooksv1alpha1.WebhookConfig) webhooksv1alpha1.SecretKeyReference {
	if ref := whc.Status.SecretRef; ref != nil && ref.Name != "" {
		out := webhooksv1alpha1.SecretKeyReference{Name: ref.Name, Key: ref.Key}
		if out.Key == "" {
			out.Key = webhooksv1alpha1.DefaultSecretKey
		}
		return out
	}
	return whc.SigningSecretRef()
}

// SigningSecrets reads the signing secrets of whc from its Secret
// (SigningSecretRef): the newest alone, or with all every one that still
// signs at now, newest first (during a rotation's grace period the key
// holds several, separated by whitespace). It returns at least one secret
// or an explained error.
func SigningSecrets(ctx context.Context, c client.Client, whc *webhooksv1alpha1.WebhookConfig, all bool, now time.Time) ([]string, error) {
	ns, name := whc.Namespace, whc.Name
	ref := SigningSecretRef(whc)
	generated := whc.Spec.SecretRef == nil

	var secret corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: ref.Name}, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			if generated {
				return nil, Explained(err, "secret %q of webhookconfig/%s not found in namespace %q: the operator generates it, check that the manager is running (%s)",
					ref.Name, name, ns, OperatorPodsHint)
			}
			return nil, Explained(err, "secret %q, named by spec.secretRef of webhookconfig/%s, not found in namespace %q: create it with the signing secret under key %q",
				ref.Name, name, ns, ref.Key)
		}
		return nil, ExplainAccessError(err, "get", "secrets", ns, fmt.Sprintf("secret %q", ref.Name))
	}
	// The secrets are separated by whitespace, the newest first; surrounding
	// whitespace, such as a trailing newline, is not part of a secret.
	secrets := strings.Fields(string(secret.Data[ref.Key]))
	if len(secrets) == 0 {
		return nil, fmt.Errorf("secret %q in namespace %q has no value under key %q, the key webhookconfig/%s signs with",
			ref.Name, ns, ref.Key, name)
	}
	// Once a rotation's grace period ended, the previous secrets no longer sign.
	if end, err := time.Parse(time.RFC3339, secret.Annotations[webhooksv1alpha1.AnnotationRotationEndsAt]); !all || err == nil && !now.Before(end) {
		secrets = secrets[:1]
	}
	return secrets, nil
}
