// Command etcd builds etcd from the Go module proxy for envtest and `make dev`.
// Built by `make envtest-bin`; never committed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
