package plugin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// exampleTimestamp is the envelope timestamp of the printed examples.
const exampleTimestamp = "2026-11-28T10:15:02.123Z"

func newEventTypesCommand(o *options) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "event-types [TYPE] [-o text|json]",
		Short: "List the event types with an example payload of each",
		Long: `List every WA Blast event type, what it means and an example of the request
body a receiver gets for it: the Standard Webhooks envelope with the type, a
timestamp and the event's data. With TYPE, show that type only, with the JSON
Schema of its data.

The catalog is the one built into this plugin, which the dispatcher of the same
version serves at GET /v1/event-types. -o json prints it in that endpoint's
format. No cluster is contacted.`,
		Example: `  # Every event type with an example payload
  kubectl webhook event-types

  # One type, with the JSON Schema of its data
  kubectl webhook event-types message.failed

  # The catalog as JSON, as GET /v1/event-types serves it
  kubectl webhook event-types -o json`,
		Args: cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return catalog.Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(_ *cobra.Command, args []string) error {
			types := catalog.Types()
			if len(args) == 1 {
				t, ok := catalog.Lookup(args[0])
				if !ok {
					return fmt.Errorf("unknown event type %q: the types are %s", args[0], strings.Join(catalog.Names(), ", "))
				}
				types = []catalog.Type{t}
			}
			switch output {
			case "", "text":
				return printEventTypes(o.streams.Out, types, len(args) == 1)
			case "json":
				return printEventTypesJSON(o.streams.Out, types)
			default:
				return fmt.Errorf("unknown output format %q: use text or json", output)
			}
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

// printEventTypes writes each type's name, description and example request
// body; withSchema adds the JSON Schema of its data.
func printEventTypes(out io.Writer, types []catalog.Type, withSchema bool) error {
	var b bytes.Buffer
	for i, t := range types {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(t.Name)
		if t.Reserved {
			b.WriteString(" (sent only by test deliveries: kubectl webhook test)")
		}
		b.WriteString("\n")
		fmt.Fprintf(&b, "  %s\n", t.Description)
		envelope, err := json.MarshalIndent(struct {
			Type      string          `json:"type"`
			Timestamp string          `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}{t.Name, exampleTimestamp, t.Example}, "    ", "  ")
		if err != nil {
			return fmt.Errorf("rendering the example of %s: %w", t.Name, err)
		}
		fmt.Fprintf(&b, "  Example payload:\n    %s\n", envelope)
		if withSchema {
			var schema bytes.Buffer
			if err := json.Indent(&schema, t.Schema, "    ", "  "); err != nil {
				return fmt.Errorf("rendering the schema of %s: %w", t.Name, err)
			}
			fmt.Fprintf(&b, "  Schema of data:\n    %s\n", bytes.TrimSpace(schema.Bytes()))
		}
	}
	_, err := out.Write(b.Bytes())
	return err
}

// printEventTypesJSON writes types as the catalog.List of GET
// /v1/event-types, indented.
func printEventTypesJSON(out io.Writer, types []catalog.Type) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(catalog.NewList(types)); err != nil {
		return fmt.Errorf("writing the catalog: %w", err)
	}
	return nil
}
