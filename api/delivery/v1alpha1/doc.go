// Package v1alpha1 holds the types of the delivery.wablast.io API group: the
// delivery log the manager serves as an aggregated API (WebhookDelivery).
// Nothing of it is stored in etcd, so there is no CRD for it.
//
// +k8s:openapi-gen=true
// +kubebuilder:object:generate=true
// +kubebuilder:skip
// +groupName=delivery.wablast.io
package v1alpha1
