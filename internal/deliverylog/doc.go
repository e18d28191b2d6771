// Package deliverylog reads the delivery log (store.StreamDeliveryLog) back
// as WebhookDeliveries: it folds the Stored and Attempt records of each
// (event, WebhookConfig) into one object, lists a namespace's or one
// WebhookConfig's deliveries as of a stream sequence (their resource
// version), and follows the log for watches. It also names deliveries.
package deliverylog
