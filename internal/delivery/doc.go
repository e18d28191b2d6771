// Package delivery delivers accepted events to the endpoints configured by
// WebhookConfig resources. The controller resolves each resource into an
// Endpoint and keeps it in a Registry; the dispatcher reads the registry to
// fan events out, sign them and deliver them with retries.
package delivery
