// Command gen-openapi writes docs/openapi.json, the OpenAPI 3.1 document of
// the ingestion API that the manager serves at GET /v1/openapi.json; with
// -check it fails when the file is stale instead.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/wablast/webhook-operator/internal/ingest"
)

func main() {
	out := flag.String("out", "docs/openapi.json", "the file to write")
	check := flag.Bool("check", false, "do not write; exit 1 if the file differs from what would be written")
	flag.Parse()
	doc, err := ingest.OpenAPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, "gen-openapi:", err)
		os.Exit(1)
	}
	if *check {
		current, err := os.ReadFile(*out)
		if err != nil || !bytes.Equal(current, doc) {
			fmt.Fprintf(os.Stderr, "gen-openapi: %s is stale: run 'go run ./hack/gen-openapi' and commit the result\n", *out)
			os.Exit(1)
		}
		return
	}
	if err := os.WriteFile(*out, doc, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen-openapi:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out)
}
