package ui

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/actions"
)

// The delivery policy's defaults, as the CRD sets them: a new resource's
// form starts with these.
const (
	defaultTimeoutSeconds        = 10
	defaultMaxAttempts           = 10
	defaultInitialBackoffSeconds = 5
	defaultMaxBackoffSeconds     = 21600
	defaultMaxAgeSeconds         = 259200
	defaultMaxInFlight           = 16
)

// webhookView is what the page shows of one WebhookConfig: its spec as the
// form edits it and the status the list and the status panel show. It
// names the signing Secret but never holds a secret.
type webhookView struct {
	Name               string       `json:"name"`
	Generation         int64        `json:"generation"`
	CreationTimestamp  metav1.Time  `json:"creationTimestamp"`
	URL                string       `json:"url"`
	Events             []string     `json:"events"`
	AllEvents          bool         `json:"allEvents"`
	Enabled            bool         `json:"enabled"`
	Paused             bool         `json:"paused"`
	Delivery           deliveryView `json:"delivery"`
	SecretRef          *secretRef   `json:"secretRef,omitempty"`
	SigningSecret      secretRef    `json:"signingSecret"`
	ObservedGeneration int64        `json:"observedGeneration"`

	// The columns of kubectl get whc.
	Active      bool   `json:"active"`
	Ready       string `json:"ready"`
	Delivering  string `json:"delivering"`
	SuccessRate string `json:"successRate"`
	Sent        int64  `json:"sent"`

	Delivered            int64                            `json:"delivered"`
	Failed               int64                            `json:"failed"`
	Pending              int64                            `json:"pending"`
	ConsecutiveFailures  int64                            `json:"consecutiveFailures"`
	Conditions           []metav1.Condition               `json:"conditions"`
	LastDelivery         *webhooksv1alpha1.DeliveryRecord `json:"lastDelivery,omitempty"`
	LastTest             *webhooksv1alpha1.TestRecord     `json:"lastTest,omitempty"`
	SecretRotationEndsAt *metav1.Time                     `json:"secretRotationEndsAt,omitempty"`
}

// deliveryView is the delivery policy, every field set.
type deliveryView struct {
	TimeoutSeconds        int32 `json:"timeoutSeconds"`
	MaxAttempts           int32 `json:"maxAttempts"`
	InitialBackoffSeconds int32 `json:"initialBackoffSeconds"`
	MaxBackoffSeconds     int32 `json:"maxBackoffSeconds"`
	MaxAgeSeconds         int32 `json:"maxAgeSeconds"`
	MaxInFlight           int32 `json:"maxInFlight"`
}

// secretRef names a Secret key.
type secretRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// defaultDelivery is the policy a new resource gets.
func defaultDelivery() deliveryView {
	return deliveryView{
		TimeoutSeconds: defaultTimeoutSeconds, MaxAttempts: defaultMaxAttempts,
		InitialBackoffSeconds: defaultInitialBackoffSeconds, MaxBackoffSeconds: defaultMaxBackoffSeconds,
		MaxAgeSeconds: defaultMaxAgeSeconds, MaxInFlight: defaultMaxInFlight,
	}
}

// newView returns the view of whc.
func newView(whc *webhooksv1alpha1.WebhookConfig) webhookView {
	st := &whc.Status
	v := webhookView{
		Name:                 whc.Name,
		Generation:           whc.Generation,
		CreationTimestamp:    whc.CreationTimestamp,
		URL:                  whc.Spec.URL,
		Events:               []string{},
		Enabled:              whc.IsEnabled(),
		Paused:               whc.Spec.Paused,
		Delivery:             defaultDelivery(),
		ObservedGeneration:   st.ObservedGeneration,
		Active:               st.Active,
		Ready:                conditionStatus(st.Conditions, "Ready"),
		Delivering:           conditionStatus(st.Conditions, "Delivering"),
		SuccessRate:          st.SuccessRate,
		Sent:                 st.TotalEventsSent,
		Delivered:            st.EventsDelivered,
		Failed:               st.EventsFailed,
		Pending:              st.EventsPending,
		ConsecutiveFailures:  st.ConsecutiveFailures,
		Conditions:           st.Conditions,
		LastDelivery:         st.LastDelivery,
		LastTest:             st.LastTest,
		SecretRotationEndsAt: st.SecretRotationEndsAt,
	}
	if v.Conditions == nil {
		v.Conditions = []metav1.Condition{}
	}
	for _, e := range whc.Spec.Events {
		if e == webhooksv1alpha1.EventTypeAll {
			v.AllEvents = true
			continue
		}
		v.Events = append(v.Events, string(e))
	}
	if d := whc.Spec.Delivery; d != nil {
		setIfPositive(&v.Delivery.TimeoutSeconds, d.TimeoutSeconds)
		setIfPositive(&v.Delivery.MaxAttempts, d.MaxAttempts)
		setIfPositive(&v.Delivery.InitialBackoffSeconds, d.InitialBackoffSeconds)
		setIfPositive(&v.Delivery.MaxBackoffSeconds, d.MaxBackoffSeconds)
		setIfPositive(&v.Delivery.MaxAgeSeconds, d.MaxAgeSeconds)
		setIfPositive(&v.Delivery.MaxInFlight, d.MaxInFlight)
	}
	if ref := whc.Spec.SecretRef; ref != nil {
		v.SecretRef = &secretRef{Name: ref.Name, Key: ref.Key}
	}
	ref := actions.SigningSecretRef(whc)
	v.SigningSecret = secretRef{Name: ref.Name, Key: ref.Key}
	return v
}

func setIfPositive(dst *int32, v int32) {
	if v > 0 {
		*dst = v
	}
}

// conditionStatus is the status of condition typ ("True", "False",
// "Unknown"), or "" when it is not set, as kubectl's column shows it.
func conditionStatus(conds []metav1.Condition, typ string) string {
	if c := meta.FindStatusCondition(conds, typ); c != nil {
		return string(c.Status)
	}
	return ""
}
