package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

var (
	docPath   = filepath.Join("..", "..", "docs", "api.md")
	typesPath = filepath.Join("..", "..", "api", "v1alpha1", "webhookconfig_types.go")
)

func TestDocIsUpToDate(t *testing.T) {
	if err := run(docPath, typesPath, true, io.Discard); err != nil {
		t.Fatal(err)
	}
}

func TestCheckReportsAStaleDocAndWriteFixesIt(t *testing.T) {
	doc := []byte("# API\n\n<!-- BEGIN GENERATED: gen-api-doc spec -->\nold\n<!-- END GENERATED: gen-api-doc spec -->\n\n" +
		"prose\n\n<!-- BEGIN GENERATED: gen-api-doc status -->\n<!-- END GENERATED: gen-api-doc status -->\n")
	path := filepath.Join(t.TempDir(), "api.md")
	if err := os.WriteFile(path, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(path, typesPath, true, io.Discard); !errors.Is(err, errStale) {
		t.Fatalf("run -check on a stale document = %v", err)
	}
	if err := run(path, typesPath, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := run(path, typesPath, true, io.Discard); err != nil {
		t.Fatalf("run -check after writing = %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(got, []byte("# API\n\n")) || !bytes.Contains(got, []byte("\nprose\n")) || bytes.Contains(got, []byte("old\n")) {
		t.Errorf("only the generated sections may change:\n%s", got)
	}
}

func TestMissingMarkersAreAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "api.md")
	if err := os.WriteFile(path, []byte("# API\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(path, typesPath, false, io.Discard); err == nil || errors.Is(err, errStale) {
		t.Fatalf("a document without markers: %v", err)
	}
}

// Every JSON field of the spec and the status, nested ones included, has a
// row in docs/api.md with its doc comment.
func TestDocHasARowForEveryField(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var walk func(reflect.Type, string)
	walk = func(typ reflect.Type, prefix string) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			path := prefix + name
			paths = append(paths, path)
			ft := f.Type
			sub := path + "."
			if ft.Kind() == reflect.Slice {
				ft, sub = ft.Elem(), path+"[]."
			}
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() == reflect.TypeFor[webhooksv1alpha1.WebhookConfigStatus]().PkgPath() {
				walk(ft, sub)
			}
		}
	}
	walk(reflect.TypeFor[webhooksv1alpha1.WebhookConfigSpec](), "spec.")
	walk(reflect.TypeFor[webhooksv1alpha1.WebhookConfigStatus](), "status.")
	for _, p := range paths {
		if !bytes.Contains(doc, []byte("| `"+p+"` | ")) {
			t.Errorf("docs/api.md has no row for %s", p)
		}
	}
	for _, want := range []string{"totalEventsSent", "eventsDelivered", "eventsFailed", "eventsPending", "consecutiveFailures",
		"successRate", "lastDelivery", "recentDeliveries", "lastTest", "lastReplay"} {
		if !bytes.Contains(doc, []byte("| `status."+want+"` | ")) {
			t.Errorf("docs/api.md has no row for status.%s", want)
		}
	}
}
