// Package deliveryapi serves the delivery log as the aggregated API
// delivery.wablast.io/v1alpha1 (resource webhookdeliveries) with
// k8s.io/apiserver, as metrics-server serves metrics.k8s.io: a
// rest.Storage over the log in JetStream (get, list, watch, the resend
// subresource), kubectl's columns, and authentication and authorization
// delegated to the kube-apiserver.
package deliveryapi
