// Package plugin implements kubectl-webhook, the kubectl plugin of the WA
// Blast webhook operator: "kubectl webhook test", "status", "secret",
// "rotate-secret", "replay", "deliveries", "resend", "event-types" and "ui"
// (a thin wrapper of the web page in internal/ui).
//
// The commands talk to the API server only, never to the dispatcher: a test
// delivery or a replay is requested with an annotation on the WebhookConfig
// and its outcome is read back from the resource's status, as the operator
// echoes each annotation value there. NewRootCommand builds the command tree
// and Execute runs it and turns its error into an exit code, so the commands
// can be tested with in-memory streams. What the web page does too (a test
// request, reading and rotating the secret) lives in internal/actions.
package plugin
