package plugin

import "github.com/wablast/webhook-operator/internal/actions"

// The error explanations are shared with the web page (internal/ui) in
// internal/actions; these names keep the commands' code short.
var (
	explainWebhookConfigError = actions.ExplainWebhookConfigError
	explained                 = actions.Explained
	isPermanent               = actions.IsPermanent
)
