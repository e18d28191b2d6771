// Package ui is the web page of "kubectl webhook ui": a local HTTP server on
// loopback that shows and edits the WebhookConfigs of one namespace with the
// user's own kubeconfig credentials, as "kubectl proxy" acts for its user.
// It adds no identity and no permission: every read and write is the user's
// request to the API server, and a refused one shows the API server's
// message.
//
// The page lists the WebhookConfigs with the columns of "kubectl get whc",
// kept live by a watch streamed to the browser as server-sent events; edits
// one with a form applied by server-side apply (field manager FieldManager),
// with each validation error of the API server beside its field; shows,
// generates and rotates the signing secret (internal/actions, as
// "kubectl webhook secret" and "rotate-secret" do); requests a test
// delivery and shows its outcome from status.lastTest; lists the recent
// deliveries from the delivery log API and resends one; and documents every
// event type from internal/catalog.
//
// Access: the server listens on 127.0.0.1 only and answers only requests
// for a loopback host name (no DNS rebinding). Every request needs the
// random access token of the address the command prints: the first one
// carries it in the URL, which sets a cookie and redirects to the same page
// without it. Every change (any method but GET and HEAD) also needs the
// page's CSRF token in the X-CSRF-Token header and, when the browser sends
// one, an Origin of the server itself. Secret values are sent only in the
// body of an answer to an explicit request, never in a URL or a log line.
//
// The templates and static files are embedded; the script is plain
// JavaScript with no build step.
package ui
