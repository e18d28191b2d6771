// Command gen-api-doc writes the field reference of docs/api.md from the
// API's Go types (api/v1alpha1): every field of the spec and of the status,
// with its type, default, validation and the doc comment that
// `kubectl explain` prints, so the document cannot drift from the types.
//
// It replaces what lies between the markers
//
//	<!-- BEGIN GENERATED: gen-api-doc spec -->
//	<!-- END GENERATED: gen-api-doc spec -->
//
// (and the same for status), leaving the rest of the file as written.
// Run it from the repository root (make generate does):
//
//	go run ./hack/gen-api-doc          # rewrite docs/api.md
//	go run ./hack/gen-api-doc -check   # exit 1 if docs/api.md is stale
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

func main() {
	doc := flag.String("doc", "docs/api.md", "the document to update, relative to the working directory")
	types := flag.String("types", "api/v1alpha1/webhookconfig_types.go", "the Go file that declares the API types")
	check := flag.Bool("check", false, "do not write; exit 1 if the document differs from what would be written")
	flag.Parse()
	if err := run(*doc, *types, *check, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "gen-api-doc:", err)
		os.Exit(1)
	}
}

// errStale is returned by run with -check when the document is out of date.
var errStale = errors.New("stale")

// sections are the generated parts of the document: marker name, root type
// and the field path prefix.
var sections = []struct{ name, root, prefix string }{
	{"spec", "WebhookConfigSpec", "spec."},
	{"status", "WebhookConfigStatus", "status."},
}

func run(docPath, typesPath string, check bool, stdout io.Writer) error {
	api, err := parseTypes(typesPath)
	if err != nil {
		return err
	}
	current, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	out := current
	for _, s := range sections {
		var table bytes.Buffer
		if err := api.writeTable(&table, s.root, s.prefix); err != nil {
			return err
		}
		out, err = replaceSection(out, s.name, table.Bytes())
		if err != nil {
			return fmt.Errorf("%s: %w", docPath, err)
		}
	}
	if check {
		if !bytes.Equal(current, out) {
			return fmt.Errorf("%s is %w: run 'make generate' and commit the result", docPath, errStale)
		}
		return nil
	}
	if bytes.Equal(current, out) {
		return nil
	}
	if err := os.WriteFile(docPath, out, 0o644); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "wrote %s\n", docPath)
	return err
}

// replaceSection puts body between the named section's markers of doc.
func replaceSection(doc []byte, name string, body []byte) ([]byte, error) {
	begin := []byte("<!-- BEGIN GENERATED: gen-api-doc " + name + " -->\n")
	end := []byte("<!-- END GENERATED: gen-api-doc " + name + " -->")
	i := bytes.Index(doc, begin)
	j := bytes.Index(doc, end)
	if i < 0 || j < i {
		return nil, fmt.Errorf("no %q ... %q markers", strings.TrimSpace(string(begin)), end)
	}
	out := make([]byte, 0, len(doc)+len(body))
	out = append(out, doc[:i+len(begin)]...)
	out = append(out, body...)
	return append(out, doc[j:]...), nil
}

// typeDecl is one type declared in the API file.
type typeDecl struct {
	doc    []string // comment lines, markers included
	expr   ast.Expr
	fields []*ast.Field // for structs
}

// apiTypes are the API file's type declarations, by name.
type apiTypes map[string]*typeDecl

func parseTypes(path string) (apiTypes, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	out := apiTypes{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			doc := ts.Doc
			if doc == nil {
				doc = gd.Doc
			}
			td := &typeDecl{doc: commentLines(doc), expr: ts.Type}
			if st, ok := ts.Type.(*ast.StructType); ok {
				td.fields = st.Fields.List
			}
			out[ts.Name.Name] = td
		}
	}
	return out, nil
}

func commentLines(g *ast.CommentGroup) []string {
	if g == nil {
		return nil
	}
	return strings.Split(strings.TrimRight(g.Text(), "\n"), "\n")
}

// writeTable writes the reference table of the struct root, its nested
// structs expanded under their field paths.
func (api apiTypes) writeTable(w io.Writer, root, prefix string) error {
	if _, ok := api[root]; !ok {
		return fmt.Errorf("no type %s", root)
	}
	fmt.Fprintln(w, "| field | type | default | validation | description |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	if err := api.writeFields(w, root, prefix); err != nil {
		return err
	}
	if rules := validationOf(markersOf(api[root].doc), false); rules != "" {
		fmt.Fprintf(w, "\nAcross fields: %s.\n", rules)
	}
	return nil
}

func (api apiTypes) writeFields(w io.Writer, typeName, prefix string) error {
	for _, f := range api[typeName].fields {
		if len(f.Names) == 0 || f.Tag == nil {
			continue // embedded: none in the spec and status types
		}
		tag, err := strconv.Unquote(f.Tag.Value)
		if err != nil {
			return err
		}
		jsonName, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
		if jsonName == "" || jsonName == "-" {
			continue
		}
		path := prefix + jsonName
		lines := commentLines(f.Doc)
		elem, list := elemType(f.Type)
		markers := markersOf(lines)
		// Markers on a named type (an enum, a struct's rules) apply to its
		// fields too.
		if id, ok := elem.(*ast.Ident); ok {
			if td, ok := api[id.Name]; ok {
				markers = append(markersOf(td.doc), markers...)
			}
		}
		row := []string{
			"`" + path + "`",
			api.typeName(f.Type),
			defaultOf(markers, lines),
			validationOf(markers, list),
			describe(lines),
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		if id, ok := elem.(*ast.Ident); ok {
			if td, ok := api[id.Name]; ok && td.fields != nil {
				sub := path + "."
				if list {
					sub = path + "[]."
				}
				if err := api.writeFields(w, id.Name, sub); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// elemType strips pointers and a slice: the element type and whether the
// field is a list.
func elemType(e ast.Expr) (ast.Expr, bool) {
	list := false
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.ArrayType:
			e, list = t.Elt, true
		default:
			return e, list
		}
	}
}

// typeName is a field's type as a user of the YAML sees it.
func (api apiTypes) typeName(e ast.Expr) string {
	elem, list := elemType(e)
	var name string
	switch t := elem.(type) {
	case *ast.Ident:
		switch t.Name {
		case "string":
			name = "string"
		case "bool":
			name = "boolean"
		case "int32", "int64":
			name = "integer"
		default:
			td, ok := api[t.Name]
			switch {
			case ok && td.fields != nil:
				name = "object"
			case ok:
				name = api.typeName(td.expr)
			default:
				name = t.Name
			}
		}
	case *ast.SelectorExpr:
		switch t.Sel.Name {
		case "Time":
			name = "time (RFC 3339)"
		case "Condition":
			name = "Condition"
		default:
			name = t.Sel.Name
		}
	default:
		name = "object"
	}
	if list {
		return "list of " + name
	}
	return name
}

// markersOf returns the +marker lines of a comment, without the "+".
func markersOf(lines []string) []string {
	var out []string
	for _, l := range lines {
		if m, ok := strings.CutPrefix(strings.TrimSpace(l), "+"); ok {
			out = append(out, m)
		}
	}
	return out
}

// marker returns the value of the first marker named name ("kubebuilder:default").
func marker(markers []string, name string) (string, bool) {
	for _, m := range markers {
		if v, ok := strings.CutPrefix(m, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func has(markers []string, name string) bool {
	for _, m := range markers {
		if m == name {
			return true
		}
	}
	return false
}

// defaultOf is the default column: the default marker, "required", or empty.
func defaultOf(markers, _ []string) string {
	if v, ok := marker(markers, "kubebuilder:default"); ok {
		return "`" + strings.Trim(v, `"`) + "`"
	}
	if has(markers, "required") {
		return "required"
	}
	return ""
}

var (
	xvalidationMessage = regexp.MustCompile(`(?:^|[:,])message="((?:[^"\\]|\\.)*)"`)
	xvalidationRule    = regexp.MustCompile(`rule="((?:[^"\\]|\\.)*)"`)
)

// validationOf summarises the validation markers of a field.
func validationOf(markers []string, list bool) string {
	var parts []string
	if v, ok := marker(markers, "kubebuilder:validation:Enum"); ok {
		vals := strings.Split(v, ";")
		for i := range vals {
			vals[i] = "`" + strings.Trim(vals[i], `"`) + "`"
		}
		parts = append(parts, "one of "+strings.Join(vals, ", "))
	}
	lo, hasLo := marker(markers, "kubebuilder:validation:Minimum")
	hi, hasHi := marker(markers, "kubebuilder:validation:Maximum")
	switch {
	case hasLo && hasHi:
		parts = append(parts, lo+".."+hi)
	case hasLo:
		parts = append(parts, "at least "+lo)
	case hasHi:
		parts = append(parts, "at most "+hi)
	}
	for _, b := range []struct{ marker, what, one string }{
		{"kubebuilder:validation:MinLength", "at least %s characters", "not empty"},
		{"kubebuilder:validation:MaxLength", "at most %s characters", ""},
		{"kubebuilder:validation:MinItems", "at least %s items", "at least one item"},
		{"kubebuilder:validation:MaxItems", "at most %s items", ""},
	} {
		if v, ok := marker(markers, b.marker); ok {
			if v == "1" && b.one != "" {
				parts = append(parts, b.one)
			} else {
				parts = append(parts, fmt.Sprintf(b.what, v))
			}
		}
	}
	if v, ok := marker(markers, "kubebuilder:validation:Pattern"); ok {
		parts = append(parts, "matches "+strings.ReplaceAll(strings.Trim(v, "`"), "|", `\|`))
	}
	if list && has(markers, "listType=set") {
		parts = append(parts, "no duplicates")
	}
	for _, m := range markers {
		if !strings.HasPrefix(m, "kubebuilder:validation:XValidation:") {
			continue
		}
		if sm := xvalidationMessage.FindStringSubmatch(m); sm != nil {
			msg, err := strconv.Unquote(`"` + sm[1] + `"`)
			if err != nil {
				msg = sm[1]
			}
			parts = append(parts, "rule: "+escape(msg))
		} else if sm := xvalidationRule.FindStringSubmatch(m); sm != nil {
			parts = append(parts, "rule: `"+escape(sm[1])+"`")
		}
	}
	return strings.Join(parts, "; ")
}

// describe is the comment without its markers, on one line.
func describe(lines []string) string {
	var words []string
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "+") {
			continue
		}
		words = append(words, l)
	}
	return escape(strings.Join(words, " "))
}

// escape keeps text inside one markdown table cell, and "<name>" from
// being read as an HTML tag.
func escape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}
