// Package testutil starts the real control plane (envtest's etcd and
// kube-apiserver) for integration tests and holds small helpers shared by
// them. It is imported by tests and by the local development system (hack/dev).
package testutil
