// Package controller reconciles WebhookConfig resources into the dispatcher's
// registry. It resolves signing Secrets (generating one when none is
// referenced), keeps the kstatus conditions Ready, Reconciling and Stalled,
// and never delivers events itself.
package controller
