package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EventType names a kind of WA Blast event: message.sent, message.delivered,
// message.failed, session.connected, session.disconnected, campaign.started,
// campaign.completed, or "*" for every type.
//
// The allowed values are checked by a CEL rule rather than an enum: the API
// server skips every CEL rule of the object once an enum fails, and adds
// "some validation rules were not checked because the object was invalid"
// to the answer; a rule reports only the real problem.
//
// +kubebuilder:validation:XValidation:rule="self in ['message.sent', 'message.delivered', 'message.failed', 'session.connected', 'session.disconnected', 'campaign.started', 'campaign.completed', '*']",messageExpression="self == 'webhook.test' ? 'webhook.test is sent only by test deliveries and cannot be subscribed to' : 'unknown event type: the types are message.sent, message.delivered, message.failed, session.connected, session.disconnected, campaign.started, campaign.completed, or \"*\" for every type'"
type EventType string

// The event types an endpoint can subscribe to. EventTypeAll subscribes to every type.
const (
	EventMessageSent         EventType = "message.sent"
	EventMessageDelivered    EventType = "message.delivered"
	EventMessageFailed       EventType = "message.failed"
	EventSessionConnected    EventType = "session.connected"
	EventSessionDisconnected EventType = "session.disconnected"
	EventCampaignStarted     EventType = "campaign.started"
	EventCampaignCompleted   EventType = "campaign.completed"
	EventTypeAll             EventType = "*"

	// EventWebhookTest is sent only by test deliveries; it cannot be subscribed to.
	EventWebhookTest EventType = "webhook.test"
)

// Annotations acted on once per distinct value; the value is echoed back in status.
const (
	// AnnotationTestRequestedAt requests one webhook.test delivery to this endpoint.
	AnnotationTestRequestedAt = "webhooks.wablast.io/test-requested-at"
	// AnnotationReplaySince requests that events that failed for good since an RFC 3339 time are delivered again.
	AnnotationReplaySince = "webhooks.wablast.io/replay-since"
)

// AnnotationRotationEndsAt is, on a signing Secret, the RFC 3339 time a
// rotation's grace period ends (kubectl webhook rotate-secret writes it):
// until then every secret in the key signs; from then on only the first,
// the newest. Recorded on the Secret, so it holds across restarts.
const AnnotationRotationEndsAt = "webhooks.wablast.io/rotation-ends-at"

// DefaultSecretKey is the key read from the signing Secret when secretRef.key is omitted.
const DefaultSecretKey = "secret"

// WebhookConfigSpec is the desired state of one subscriber endpoint.
//
// +kubebuilder:validation:XValidation:rule="!has(self.delivery) || !has(self.delivery.initialBackoffSeconds) || !has(self.delivery.maxBackoffSeconds) || self.delivery.initialBackoffSeconds <= self.delivery.maxBackoffSeconds",message="delivery.initialBackoffSeconds must not be greater than delivery.maxBackoffSeconds"
type WebhookConfigSpec struct {
	// url is the endpoint that receives the signed POST requests. It must be an
	// absolute http or https URL with a host, without user-info (user:password@)
	// and without a #fragment, at most 2048 characters.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self)",message="url must be an absolute URL such as https://example.com/hooks"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getScheme() in ['http', 'https']",message="url scheme must be http or https"
	// +kubebuilder:validation:XValidation:rule="!isURL(self) || url(self).getHostname() != ''",message="url must have a host"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^[^:/?#]+://[^/?#]*@')",message="url must not contain user-info (user:password@)"
	// +kubebuilder:validation:XValidation:rule="!self.contains('#')",message="url must not contain a #fragment"
	URL string `json:"url"`

	// secretRef names the key of a Secret in this namespace that holds the
	// signing secret: either a Standard Webhooks secret "whsec_<base64 of 24..64
	// bytes>" or any other string of at least 16 bytes. Several secrets separated
	// by whitespace sign every request once per secret (rotation); the first is
	// the current one. When omitted, the operator generates a Secret named
	// "<name>-signing" owned by this resource and records it in status.secretRef.
	//
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// events lists the event types delivered to this endpoint, or "*" for every
	// type. "*" cannot be combined with other types.
	//
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:XValidation:rule="!('*' in self) || size(self) == 1",message="\"*\" already selects every event type and cannot be combined with others"
	Events []EventType `json:"events"`

	// enabled turns deliveries to this endpoint on or off. A disabled endpoint
	// keeps its configuration and status and still receives test deliveries.
	//
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// paused holds deliveries to this endpoint: events are still accepted and
	// kept for it (each for at most delivery.maxAgeSeconds), nothing is sent,
	// and setting it back to false delivers the backlog. status.active is
	// false while paused. Unlike enabled: false, which drops the endpoint's
	// events, nothing is lost. Test deliveries are still sent.
	//
	// +optional
	// +kubebuilder:default=false
	Paused bool `json:"paused,omitempty"`

	// delivery tunes timeouts, retries and concurrency. Every field has a default.
	//
	// +optional
	// +kubebuilder:default={}
	Delivery *DeliveryPolicy `json:"delivery,omitempty"`

	// filter is a CEL expression over the event that must be true for the
	// event to be delivered to this endpoint, for example
	// `data.campaignId == "c-42" || type.startsWith("session.")`. Its
	// variables: type (string), data (the event's data object, a map) and
	// timestamp (a CEL timestamp, the envelope's, to the millisecond). It is
	// applied after events; when omitted, every subscribed event is
	// delivered. An expression that does not compile, is not a bool or whose
	// estimated cost is over the limit makes the resource Ready=False with
	// reason InvalidFilter and the compiler's message. An event the filter
	// fails on (a missing key: use has(data.x)) is not delivered and is
	// counted in wablast_webhook_filter_errors_total. At most 4096 characters.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.trim() != ''",message="filter must not be blank: omit it to deliver every subscribed event"
	Filter string `json:"filter,omitempty"`
}

// SecretKeyReference selects a key of a Secret in the WebhookConfig's namespace.
//
// +kubebuilder:validation:XValidation:rule="!has(self.__namespace__)",message="secretRef.namespace is not supported: the Secret must be in the WebhookConfig's namespace"
type SecretKeyReference struct {
	// name of the Secret, in the same namespace as the WebhookConfig.
	//
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key within the Secret's data. Defaults to "secret".
	//
	// +optional
	// +kubebuilder:default=secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`

	// namespace is not supported and must be omitted: a WebhookConfig can only
	// use a Secret of its own namespace. The field exists so that a manifest
	// setting it is rejected instead of silently pruned.
	//
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// DeliveryPolicy controls how each event is delivered to the endpoint.
type DeliveryPolicy struct {
	// timeoutSeconds bounds one attempt: connect, send and response headers.
	//
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=60
	TimeoutSeconds int32 `json:"timeoutSeconds,omitempty"`

	// maxAttempts is the number of attempts, the first included, before an
	// event fails for good.
	//
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=20
	MaxAttempts int32 `json:"maxAttempts,omitempty"`

	// initialBackoffSeconds is the delay before the first retry; each further
	// retry doubles it, with jitter, up to maxBackoffSeconds.
	//
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=3600
	InitialBackoffSeconds int32 `json:"initialBackoffSeconds,omitempty"`

	// maxBackoffSeconds caps the delay between two attempts, including a delay
	// asked for by the receiver with Retry-After.
	//
	// +optional
	// +kubebuilder:default=21600
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	MaxBackoffSeconds int32 `json:"maxBackoffSeconds,omitempty"`

	// maxAgeSeconds gives up on an event this long after it was accepted, even
	// if attempts are left.
	//
	// +optional
	// +kubebuilder:default=259200
	// +kubebuilder:validation:Minimum=60
	// +kubebuilder:validation:Maximum=604800
	MaxAgeSeconds int32 `json:"maxAgeSeconds,omitempty"`

	// maxInFlight is the most requests open to this endpoint at once.
	//
	// +optional
	// +kubebuilder:default=16
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=256
	MaxInFlight int32 `json:"maxInFlight,omitempty"`

	// ordering is Unordered (the default: deliveries are attempted
	// concurrently and retries reorder them) or PerKey: events with the same
	// key (orderingKey) reach this endpoint strictly in the order they were
	// accepted; the next one is attempted only after the previous one
	// succeeded or failed for good. A retrying event holds back only its own
	// key, never the others, and maxInFlight still bounds the endpoint.
	// PerKey endpoints are delivered by one replica at a time (the leader).
	//
	// +optional
	// +kubebuilder:default=Unordered
	// +kubebuilder:validation:Enum=Unordered;PerKey
	Ordering DeliveryOrdering `json:"ordering,omitempty"`

	// orderingKey is a CEL expression over the event (type, data, timestamp)
	// that gives its ordering key when ordering is PerKey; its result is a
	// string (or a number or bool, used as text). When omitted:
	// has(data.messageId) ? data.messageId : (has(data.sessionId) ? data.sessionId : data.campaignId).
	// An expression that does not compile makes the resource Ready=False with
	// reason InvalidOrderingKey; an event it fails on is ordered under the
	// empty key and counted in wablast_webhook_ordering_key_errors_total.
	// At most 4096 characters.
	//
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	// +kubebuilder:validation:XValidation:rule="self.trim() != ''",message="orderingKey must not be blank: omit it for the default key"
	OrderingKey string `json:"orderingKey,omitempty"`
}

// DeliveryOrdering is spec.delivery.ordering.
//
// +kubebuilder:validation:Enum=Unordered;PerKey
type DeliveryOrdering string

// The delivery orderings.
const (
	// OrderingUnordered delivers concurrently; retries reorder events.
	OrderingUnordered DeliveryOrdering = "Unordered"
	// OrderingPerKey delivers the events of one key in acceptance order.
	OrderingPerKey DeliveryOrdering = "PerKey"
)

// DeliveryResult is the outcome of one delivery attempt.
//
// +kubebuilder:validation:Enum=Succeeded;Retrying;Failed
type DeliveryResult string

// The outcomes of an attempt.
const (
	// ResultSucceeded: the receiver answered 2xx.
	ResultSucceeded DeliveryResult = "Succeeded"
	// ResultRetrying: the attempt failed and another one is scheduled.
	ResultRetrying DeliveryResult = "Retrying"
	// ResultFailed: the attempt failed and the event failed for good.
	ResultFailed DeliveryResult = "Failed"
)

// DeliveryRecord describes one delivery attempt.
type DeliveryRecord struct {
	// time the attempt finished.
	Time metav1.Time `json:"time"`
	// eventID is the event's webhook-id.
	EventID string `json:"eventID"`
	// eventType is the event's type.
	EventType string `json:"eventType"`
	// attempt counts attempts of this event to this endpoint, from 1.
	Attempt int32 `json:"attempt"`
	// statusCode is the receiver's HTTP status, absent when no response arrived.
	// +optional
	StatusCode int32 `json:"statusCode,omitempty"`
	// durationMilliseconds is the time from sending the request to the response headers or the error.
	DurationMilliseconds int64 `json:"durationMilliseconds"`
	// result of the attempt.
	Result DeliveryResult `json:"result"`
	// error says why the attempt failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Error string `json:"error,omitempty"`
}

// TestRecord describes the last test delivery.
type TestRecord struct {
	// requestedAt echoes the webhooks.wablast.io/test-requested-at annotation value handled.
	RequestedAt string `json:"requestedAt"`
	// time the test attempt finished.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
	// result is Succeeded or Failed.
	Result DeliveryResult `json:"result"`
	// statusCode is the receiver's HTTP status, absent when no response arrived.
	// +optional
	StatusCode int32 `json:"statusCode,omitempty"`
	// durationMilliseconds of the test attempt.
	// +optional
	DurationMilliseconds int64 `json:"durationMilliseconds,omitempty"`
	// error says why the test failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Error string `json:"error,omitempty"`
}

// ReplayRecord describes the last replay.
type ReplayRecord struct {
	// requestedAt echoes the webhooks.wablast.io/replay-since annotation value handled.
	RequestedAt string `json:"requestedAt"`
	// time the events were re-queued.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
	// eventsRequeued is how many failed events were queued again: those still
	// failed (a replay does not send again what a replay or a resend delivered).
	EventsRequeued int64 `json:"eventsRequeued"`
}

// WebhookConfigStatus is the observed state of the endpoint.
type WebhookConfigStatus struct {
	// observedGeneration is the metadata.generation last reconciled; -1 before
	// the first reconcile.
	//
	// +optional
	// +kubebuilder:default=-1
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (accepted and live in the dispatcher), Reconciling and
	// Stalled (kstatus), and Delivering (recent deliveries succeed).
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	// +patchStrategy=merge
	// +patchMergeKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" patchStrategy:"merge" patchMergeKey:"type"`

	// active is true when the endpoint is enabled, not paused, and Ready.
	// +optional
	Active bool `json:"active,omitempty"`

	// secretRef is the Secret key the signing secret is read from: spec.secretRef
	// or the generated "<name>-signing" Secret.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// secretRotationEndsAt is set during a secret rotation: until this time the
	// previous secrets in the signing Secret sign beside the newest one (see the
	// webhooks.wablast.io/rotation-ends-at annotation on the Secret).
	// +optional
	SecretRotationEndsAt *metav1.Time `json:"secretRotationEndsAt,omitempty"`

	// totalEventsSent counts events given a first attempt, over the resource's
	// lifetime; a replay sends no new event.
	// +optional
	// +kubebuilder:default=0
	TotalEventsSent int64 `json:"totalEventsSent,omitempty"`
	// eventsDelivered counts events the receiver accepted with a 2xx, each once,
	// including failed events a replay or a resend delivered.
	// +optional
	EventsDelivered int64 `json:"eventsDelivered,omitempty"`
	// eventsFailed counts events that failed for good (retries exhausted, too old,
	// or 410 Gone) and are still failed: a replay or a resend takes an event out
	// of it, and its outcome counts it again as delivered or failed.
	// +optional
	EventsFailed int64 `json:"eventsFailed,omitempty"`
	// eventsPending counts events waiting for their next attempt.
	// +optional
	EventsPending int64 `json:"eventsPending,omitempty"`
	// successRate is delivered / (delivered + failed) over events finished in the
	// last 24 hours, each event counted once by its final outcome (a failed event
	// a replay or a resend delivered counts as delivered), as a percentage such as "99.8%",
	// or "-" when none finished (also before the first delivery).
	// +optional
	// +kubebuilder:default="-"
	SuccessRate string `json:"successRate,omitempty"`
	// consecutiveFailures counts events, not attempts: the events that failed
	// for good since the last event delivered; 0 after a success. An attempt
	// to be retried does not change it (see the Delivering condition).
	// +optional
	ConsecutiveFailures int64 `json:"consecutiveFailures,omitempty"`
	// lastDelivery is the most recent attempt.
	// +optional
	LastDelivery *DeliveryRecord `json:"lastDelivery,omitempty"`
	// recentDeliveries are the last 10 attempts, newest first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=10
	RecentDeliveries []DeliveryRecord `json:"recentDeliveries,omitempty"`
	// lastTest is the outcome of the last test delivery.
	// +optional
	LastTest *TestRecord `json:"lastTest,omitempty"`
	// lastReplay is the outcome of the last replay.
	// +optional
	LastReplay *ReplayRecord `json:"lastReplay,omitempty"`
}

// WebhookConfig is one subscriber endpoint of WA Blast events: where they are
// POSTed, how they are signed, which types are sent, and the delivery policy.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=whc,categories=wablast
// +kubebuilder:printcolumn:name="Active",type=boolean,JSONPath=`.status.active`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Delivering",type=string,JSONPath=`.status.conditions[?(@.type=="Delivering")].status`
// +kubebuilder:printcolumn:name="Success Rate",type=string,JSONPath=`.status.successRate`
// +kubebuilder:printcolumn:name="Sent",type=integer,JSONPath=`.status.totalEventsSent`
// +kubebuilder:printcolumn:name="Last Delivery",type=date,JSONPath=`.status.lastDelivery.time`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`,priority=1
// +kubebuilder:printcolumn:name="Events",type=string,JSONPath=`.spec.events`,priority=1
// +kubebuilder:printcolumn:name="Filter",type=string,JSONPath=`.spec.filter`,priority=1
// +kubebuilder:printcolumn:name="Ordering",type=string,JSONPath=`.spec.delivery.ordering`,priority=1
type WebhookConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired endpoint.
	// +required
	Spec WebhookConfigSpec `json:"spec"`

	// status is what the operator observed and delivered.
	// +optional
	// +kubebuilder:default={}
	Status WebhookConfigStatus `json:"status,omitempty"`
}

// WebhookConfigList is a list of WebhookConfig.
//
// +kubebuilder:object:root=true
type WebhookConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WebhookConfig `json:"items"`
}

// IsEnabled reports whether deliveries are enabled (spec.enabled defaults to true).
func (w *WebhookConfig) IsEnabled() bool {
	return w.Spec.Enabled == nil || *w.Spec.Enabled
}

// GeneratedSecretName is the name of the Secret the operator generates for a
// WebhookConfig named whcName that has no secretRef.
func GeneratedSecretName(whcName string) string { return whcName + "-signing" }

// SigningSecretRef returns the Secret key the signing secret is read from:
// spec.secretRef (key defaulted to "secret"), or the generated
// "<name>-signing" Secret's "secret" key.
func (w *WebhookConfig) SigningSecretRef() SecretKeyReference {
	if w.Spec.SecretRef != nil {
		ref := SecretKeyReference{Name: w.Spec.SecretRef.Name, Key: w.Spec.SecretRef.Key}
		if ref.Key == "" {
			ref.Key = DefaultSecretKey
		}
		return ref
	}
	return SecretKeyReference{Name: GeneratedSecretName(w.Name), Key: DefaultSecretKey}
}
