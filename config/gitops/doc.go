// Package gitops holds no code: it is the home of the tests of the GitOps
// integration files next to it.
//
//   - argocd/health.lua is the Argo CD custom health check of
//     webhooks.wablast.io/WebhookConfig, argocd/argocd-cm-patch.yaml the same
//     script inlined in the argocd-cm ConfigMap, and argocd/health_test.yaml
//     with argocd/testdata/ its test cases in Argo CD's convention.
//   - flux/ is a Flux example: the operator's Kustomization and one that
//     applies WebhookConfigs with health checks and dependsOn the first.
//
// The tests run health.lua with gopher-lua the way Argo CD does, check that
// the inlined copy is identical to health.lua, compute the kstatus status
// that Flux and `kubectl wait` see for every test object, and check the Flux
// example's shape. docs/gitops.md describes how to use these files.
package gitops
