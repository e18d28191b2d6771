package v1alpha1

// Condition types of a WebhookConfig. Ready, Reconciling and Stalled follow
// the kstatus conventions and are written by the controller; Delivering is
// written by the dispatcher.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
	ConditionDelivering  = "Delivering"
)

// Reasons of the Ready and Stalled conditions.
const (
	// ReasonSucceeded: the resource is accepted and live in the dispatcher.
	ReasonSucceeded = "Succeeded"
	// ReasonSecretNotFound: the referenced Secret does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonSecretKeyMissing: the Secret has no such key, or it is empty.
	ReasonSecretKeyMissing = "SecretKeyMissing"
	// ReasonSecretTooShort: a raw secret is shorter than 16 bytes.
	ReasonSecretTooShort = "SecretTooShort"
	// ReasonSecretInvalid: a whsec_ secret is not valid base64 of 24..64 bytes.
	ReasonSecretInvalid = "SecretInvalid"
	// ReasonSecretConflict: "<name>-signing" exists and is not owned by the resource.
	ReasonSecretConflict = "SecretConflict"
	// ReasonInvalidFilter: spec.filter does not compile, is not a bool, or
	// its estimated cost is over the limit; the message is the compiler's.
	ReasonInvalidFilter = "InvalidFilter"
	// ReasonInvalidOrderingKey: spec.delivery.orderingKey does not compile.
	ReasonInvalidOrderingKey = "InvalidOrderingKey"
)

// Reasons of the Delivering condition (and of the outcomes in
// status.lastDelivery and status.recentDeliveries).
const (
	// ReasonDeliverySucceeded: the last delivery was answered 2xx.
	ReasonDeliverySucceeded = "Succeeded"
	// ReasonDeliveryFailing: the last attempt failed (an error, a timeout
	// or a status other than 2xx and 410).
	ReasonDeliveryFailing = "DeliveryFailing"
	// ReasonEndpointGone: the receiver answered 410 Gone; deliveries stop
	// until the spec changes.
	ReasonEndpointGone = "EndpointGone"
	// ReasonEgressRefused: the egress policy refused the endpoint's address.
	ReasonEgressRefused = "EgressRefused"
)
