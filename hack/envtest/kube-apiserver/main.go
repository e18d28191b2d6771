// Command kube-apiserver builds the Kubernetes API server from the Go module
// proxy so that envtest and `make dev` can run a real control plane on a
// machine with only Go installed. Built by `make envtest-bin`; never committed.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
