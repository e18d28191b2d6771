// Package signing implements Standard Webhooks v1 (https://www.standardwebhooks.com)
// request signing and verification.
//
// A message is signed by computing HMAC-SHA256 over
// "<webhook-id>.<webhook-timestamp>.<body>" with every configured key and
// sending the base64 results as "v1,<sig>" entries, separated by single
// spaces, in the webhook-signature header. Several keys are used during a
// secret rotation so that receivers holding either the old or the new secret
// accept the request.
//
// Secrets are either "whsec_<base64>" strings, whose decoded bytes are the
// HMAC key, or plain strings of at least [MinRawSecretBytes] bytes used
// as-is.
package signing
