package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Labels every WebhookDelivery carries, so that `kubectl get -l` selects on them.
const (
	// LabelWebhook is the WebhookConfig's name.
	LabelWebhook = "webhooks.wablast.io/webhook"
	// LabelEventType is the event's type.
	LabelEventType = "webhooks.wablast.io/event-type"
	// LabelState is status.state.
	LabelState = "webhooks.wablast.io/state"
)

// DeliveryState is where a delivery stands.
type DeliveryState string

// The states of a delivery.
const (
	// StatePending: stored, no attempt made yet (or stored again by a
	// replay or resend after its last attempt).
	StatePending DeliveryState = "Pending"
	// StateRetrying: the last attempt failed; another is due at nextAttemptAt.
	StateRetrying DeliveryState = "Retrying"
	// StateSucceeded: the last attempt succeeded.
	StateSucceeded DeliveryState = "Succeeded"
	// StateFailed: given up.
	StateFailed DeliveryState = "Failed"
)

// WebhookDelivery is one event's delivery to one WebhookConfig, with every
// attempt made of it, from the manager's delivery log. Its name is
// "<webhookconfig>.<event id>", the event id escaped so that the name is a
// valid path segment (see docs/api.md).
// +kubebuilder:object:root=true
type WebhookDelivery struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   WebhookDeliverySpec   `json:"spec"`
	Status WebhookDeliveryStatus `json:"status"`
}

// WebhookDeliverySpec is what was delivered, and to which WebhookConfig.
type WebhookDeliverySpec struct {
	// webhook is the WebhookConfig's name.
	Webhook string `json:"webhook"`
	// webhookUID is the WebhookConfig's UID.
	WebhookUID types.UID `json:"webhookUID,omitempty"`
	// eventID is the event's id: the webhook-id header of every attempt.
	EventID string `json:"eventID"`
	// type is the event's type.
	Type string `json:"type"`
	// acceptedAt is when the event was accepted (or replayed or resent: a
	// replay or resend starts the delivery's retry budget anew).
	// +optional
	AcceptedAt *metav1.Time `json:"acceptedAt,omitempty"`
	// envelope is the body delivered, byte for byte as sent (a JSON
	// document in a string, so that nothing on the way re-encodes it), when
	// it is at most the log's body cap (16 KiB by default); a larger one is
	// described by envelopeBytes and envelopeSHA256 only.
	// +optional
	Envelope string `json:"envelope,omitempty"`
	// envelopeBytes is the body's size.
	// +optional
	EnvelopeBytes int64 `json:"envelopeBytes,omitempty"`
	// envelopeSHA256 is the hex SHA-256 of the body.
	// +optional
	EnvelopeSHA256 string `json:"envelopeSHA256,omitempty"`
}

// WebhookDeliveryStatus is what became of the delivery.
type WebhookDeliveryStatus struct {
	// state is Pending, Retrying, Succeeded or Failed.
	State DeliveryState `json:"state"`
	// attempts are every attempt made, oldest first.
	// +optional
	Attempts []DeliveryAttempt `json:"attempts,omitempty"`
	// nextAttemptAt is when the next attempt is due, while Retrying.
	// +optional
	NextAttemptAt *metav1.Time `json:"nextAttemptAt,omitempty"`
}

// DeliveryAttempt is one attempt (or a give-up without one: attempted false).
type DeliveryAttempt struct {
	// attempt is the attempt's number, from 1; a resend goes on counting.
	Attempt int32 `json:"attempt"`
	// attempted is false for a give-up without a request (the event was
	// too old, or the endpoint was gone).
	Attempted bool `json:"attempted"`
	// time is when the attempt ended.
	Time metav1.MicroTime `json:"time"`
	// durationMilliseconds is how long the request took.
	// +optional
	DurationMilliseconds int64 `json:"durationMilliseconds,omitempty"`
	// host is the URL's host the request went to.
	// +optional
	Host string `json:"host,omitempty"`
	// statusCode is the HTTP status of the answer (0: none).
	// +optional
	StatusCode int32 `json:"statusCode,omitempty"`
	// result is Succeeded, Retrying or Failed.
	Result string `json:"result"`
	// error says why the attempt failed.
	// +optional
	Error string `json:"error,omitempty"`
	// responseHeaders are the answer's headers, one value a name, cookies
	// and authentication headers left out, each value cut to 256 bytes,
	// 2 KiB in all.
	// +optional
	ResponseHeaders map[string]string `json:"responseHeaders,omitempty"`
	// responseBody is the first 1 KiB of the answer's body as text.
	// +optional
	ResponseBody string `json:"responseBody,omitempty"`
}

// WebhookDeliveryList is a list of WebhookDeliveries, newest first.
// +kubebuilder:object:root=true
type WebhookDeliveryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WebhookDelivery `json:"items"`
}

// WebhookDeliveryResend is the body of a create on webhookdeliveries/resend
// (it may be empty) and its answer: the delivery is stored again, with its
// original webhook-id, and its next attempts join the same WebhookDelivery.
// +kubebuilder:object:root=true
type WebhookDeliveryResend struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	// resentAt is when the delivery was stored again (in the answer).
	// +optional
	ResentAt *metav1.Time `json:"resentAt,omitempty"`
}
