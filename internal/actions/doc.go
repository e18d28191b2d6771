// Package actions holds what "kubectl webhook" and its web page
// ("kubectl webhook ui", internal/ui) do to a WebhookConfig through the API
// server on the user's behalf, with the user's own credentials: request a
// test delivery, read and rotate the signing secret. Both front ends call
// the same functions, so a rotation or a test request from the page is the
// exact operation of the command line.
//
// Errors say what to do: a missing resource names how to list them, a
// denied request names the verb and resource to ask for, and each keeps the
// API server's error for errors.Is and errors.As (and its message, after
// the explanation, where the API server's words help).
package actions
