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
	"github.com/wablast/webhook-operator/internal/testutil"
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

// TestDocDeliveryBodiesCarryTheirExamples checks every type's "Example
// delivery body" against the type's example, as the content oracle checks
// a delivery: the envelope with that type, exactly the example's data and
// the documented timestamp, nothing else.
func TestDocDeliveryBodiesCarryTheirExamples(t *testing.T) {
	doc, err := render()
	if err != nil {
		t.Fatal(err)
	}
	text := string(doc)
	for _, typ := range catalog.Types() {
		_, section, ok := strings.Cut(text, "\n### "+typ.Name+"\n")
		if !ok {
			t.Errorf("no section for %s", typ.Name)
			continue
		}
		_, rest, ok := strings.Cut(section, "Example delivery body:\n\n```json\n")
		body, _, closed := strings.Cut(rest, "\n```")
		if !ok || !closed {
			t.Errorf("%s: no example delivery body", typ.Name)
			continue
		}
		want := testutil.Posted{ID: typ.Name, Type: typ.Name, Data: typ.Example, Timestamp: "2026-11-28T10:15:02.123Z"}
		if err := testutil.CheckBody(want, []byte(body)); err != nil {
			t.Error(err)
		}
	}
}

// No paragraph says the same thing twice: the webhook.test section once
// said it cannot be posted in its schema's description and again in the
// template's sentence.
func TestNoSentenceIsRepeatedInATypeSection(t *testing.T) {
	doc, err := render()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range catalog.Types() {
		_, section, ok := strings.Cut(string(doc), "\n### "+typ.Name+"\n")
		if !ok {
			t.Fatalf("no section for %s", typ.Name)
		}
		intro, _, _ := strings.Cut(strings.TrimSpace(section), "\n\n")
		seen := map[string]bool{}
		for _, sentence := range strings.Split(intro, ". ") {
			s := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(sentence), "."))
			if seen[s] {
				t.Errorf("%s: %q said twice", typ.Name, sentence)
			}
			seen[s] = true
		}
		if n := strings.Count(intro, "cannot be posted"); n > 1 {
			t.Errorf("%s says %d times that it cannot be posted: %s", typ.Name, n, intro)
		}
	}
}
