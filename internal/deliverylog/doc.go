// Package deliverylog reads the delivery log (store.StreamDeliveryLog) back
// as WebhookDeliveries: it folds the Stored and Attempt records of each
// (event, WebhookConfig) into one object, lists a namespace's or one
// WebhookConfig's deliveries as of a stream sequence (their resource
// version), and follows the log for watches. It also names deliveries.
//
// The log's stream has a subject a WebhookConfig; the Reader finds one
// delivery's records, and a WebhookConfig's or a namespace's deliveries
// newest first, in an index on disk (Pebble, index.go) that it builds by
// following the stream (indexer.go), and reads the records by sequence
// (direct.go). Its memory does not grow with the deliveries kept.
package deliverylog
