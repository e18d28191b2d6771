package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// TestDocIsUpToDate fails when docs/events.md is not what the generator
// writes, like 'go run ./hack/gen-events-doc -check'.
func TestDocIsUpToDate(t *testing.T) {
	path := filepath.Join("..", "..", "docs", "events.md")
	if err := run(path, true, io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestCheckReportsAStaleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.md")
	if err := os.WriteFile(path, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(path, true, io.Discard); !errors.Is(err, errStale) {
		t.Fatalf("run -check on a stale file = %v", err)
	}
	var out bytes.Buffer
	if err := run(path, false, &out); err != nil {
		t.Fatal(err)
	}
	if err := run(path, true, io.Discard); err != nil {
		t.Fatalf("run -check after writing = %v", err)
	}
}

func TestDocCoversEveryTypeAndTheReceiverSnippets(t *testing.T) {
	doc, err := render()
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, typ := range catalog.Types() {
		if !strings.Contains(text, "### "+typ.Name+"\n") {
			t.Errorf("no section for %s", typ.Name)
		}
	}
	for _, want := range []string{
		"webhook-id", "webhook-timestamp", "webhook-signature", "whsec_", "crypto.createHmac",
		"func Verify(", "application/x-ndjson", "invalid_batch", "| `error.code` | string, non-empty | yes |",
		"| `to` | string (E.164 phone number) | yes |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the document does not mention %q", want)
		}
	}
}
