package actions

import (
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// OperatorPodsHint is the command that shows whether the operator runs.
const OperatorPodsHint = "kubectl get pods -A -l app.kubernetes.io/name=webhook-operator"

// webhookConfigsResource is the resource the actions work on, as RBAC names it.
var webhookConfigsResource = "webhookconfigs." + webhooksv1alpha1.GroupVersion.Group

// ExplainWebhookConfigError turns an API error about WebhookConfig name in
// namespace ns, met while doing verb, into one that says what to do. Other
// errors are returned wrapped; nil stays nil.
func ExplainWebhookConfigError(err error, verb, ns, name string) error {
	switch {
	case err == nil:
		return nil
	case apierrors.IsNotFound(err):
		return Explained(err, "webhookconfig %q not found in namespace %q (list them with: kubectl get webhookconfigs -n %s)",
			name, ns, ns)
	case meta.IsNoMatchError(err):
		return fmt.Errorf("the cluster does not serve %s/%s WebhookConfigs: install the operator's CRD first (make install): %w",
			webhooksv1alpha1.GroupVersion.Group, webhooksv1alpha1.GroupVersion.Version, err)
	}
	return ExplainAccessError(err, verb, webhookConfigsResource, ns, fmt.Sprintf("webhookconfig %q", name))
}

// ExplainAccessError explains forbidden and unauthorized errors and wraps
// every other error with what was being done (what, such as `secret "x"`).
func ExplainAccessError(err error, verb, resource, ns, what string) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("you need %s on %s in namespace %q (check with: kubectl auth can-i %s %s -n %s): %w",
			verb, resource, ns, verb, resource, ns, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("the API server did not accept your credentials; check --kubeconfig, --context and --user: %w", err)
	}
	return fmt.Errorf("cannot %s %s in namespace %q: %w", verb, what, ns, err)
}

// IsPermanent reports whether err will not go away by retrying the same
// request: the resource or its API is gone, or access is denied.
func IsPermanent(err error) bool {
	return apierrors.IsNotFound(err) || apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) ||
		meta.IsNoMatchError(err) || apierrors.IsBadRequest(err) || apierrors.IsInvalid(err)
}

// explainedError is a message written for the user that replaces the text
// of the error it explains, such as the API server's "not found", and keeps
// that error for errors.Is and errors.As.
type explainedError struct {
	msg string
	err error
}

// Explained returns an error whose message is format, args and that
// unwraps to err.
func Explained(err error, format string, args ...any) error {
	return &explainedError{msg: fmt.Sprintf(format, args...), err: err}
}

func (e *explainedError) Error() string { return e.msg }

func (e *explainedError) Unwrap() error { return e.err }
