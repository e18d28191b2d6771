package ingest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/wablast/webhook-operator/internal/catalog"
)

// OpenAPIPath is where the ingestion API serves its OpenAPI document.
const OpenAPIPath = "/v1/openapi.json"

// obj is a JSON object of the document; encoding/json writes its keys
// sorted, so the document is the same bytes on every run.
type obj = map[string]any

// OpenAPI returns the OpenAPI 3.1 document of the ingestion API, indented:
// the body of GET /v1/openapi.json and docs/openapi.json. The event schemas
// are the catalog's (the same ones the API validates with), so the
// document cannot drift from what the API accepts.
func OpenAPI() ([]byte, error) {
	schemas := obj{
		"Accepted": obj{
			"type":        "object",
			"description": "The answer to one event: stored durably before this answer was sent.",
			"required":    []string{"id", "subscribers"},
			"properties": obj{
				"id":          obj{"type": "string", "description": "The event's id: the one posted, or one the API generated. It is the webhook-id of every delivery of the event."},
				"subscribers": obj{"type": "integer", "minimum": 0, "description": "How many enabled WebhookConfigs of the namespace subscribe to the event's type and, where they have a spec.filter, match it."},
				"duplicate":   obj{"type": "boolean", "const": true, "description": "Present when an event with this id was already accepted within the idempotency window: it is not stored or delivered again."},
			},
			"additionalProperties": false,
		},
		"AcceptedBatch": obj{
			"type":        "object",
			"description": "The answer to a batch: every line was accepted and stored, in order.",
			"required":    []string{"events", "accepted"},
			"properties": obj{
				"events":   obj{"type": "array", "items": ref("Accepted")},
				"accepted": obj{"type": "integer", "minimum": 0, "description": "How many lines were new events (not duplicates)."},
			},
			"additionalProperties": false,
		},
		"Error": obj{
			"type":     "object",
			"required": []string{"error"},
			"properties": obj{
				"error": obj{
					"type":     "object",
					"required": []string{"code", "message"},
					"properties": obj{
						"code":    obj{"type": "string", "enum": errorCodes(), "description": "What went wrong, for programs; stable."},
						"message": obj{"type": "string", "description": "What went wrong and how to fix it, for people."},
						"lines":   obj{"type": "array", "items": obj{"type": "integer", "minimum": 1}, "description": "The bad lines of a batch, 1-based."},
						"violations": obj{
							"type":        "array",
							"maxItems":    catalog.MaxListedViolations,
							"description": "A schema_violation's violations of the type's schema, each where it is in data.",
							"items": obj{
								"type":     "object",
								"required": []string{"pointer", "reason"},
								"properties": obj{
									"pointer": obj{"type": "string", "description": "The JSON Pointer (RFC 6901) into data; \"\" is data itself."},
									"reason":  obj{"type": "string"},
								},
								"additionalProperties": false,
							},
						},
						"details": obj{
							"type":        "array",
							"description": "The error of each bad line of a batch.",
							"items": obj{
								"type":     "object",
								"required": []string{"line", "code", "message"},
								"properties": obj{
									"line":    obj{"type": "integer", "minimum": 1},
									"code":    obj{"type": "string"},
									"message": obj{"type": "string"},
								},
								"additionalProperties": false,
							},
						},
					},
					"additionalProperties": false,
				},
			},
			"additionalProperties": false,
		},
		"EventTypeList": obj{
			"type":     "object",
			"required": []string{"eventTypes"},
			"properties": obj{
				"eventTypes": obj{"type": "array", "items": obj{
					"type":     "object",
					"required": []string{"type", "description", "schema", "example"},
					"properties": obj{
						"type":        obj{"type": "string"},
						"description": obj{"type": "string"},
						"schema":      obj{"type": "object", "description": "The JSON Schema (draft 2020-12) of the type's data."},
						"example":     obj{"type": "object"},
						"reserved":    obj{"type": "boolean", "description": "True for webhook.test, which only the operator sends."},
					},
				}},
			},
		},
		"Status": obj{
			"type":                 "object",
			"required":             []string{"status"},
			"properties":           obj{"status": obj{"const": "ok"}},
			"additionalProperties": false,
		},
	}
	var events []any
	for _, t := range catalog.Types() {
		if t.Reserved {
			continue
		}
		var data obj
		if err := json.Unmarshal(t.Schema, &data); err != nil {
			return nil, fmt.Errorf("the schema of %s: %w", t.Name, err)
		}
		// The schema lives inside the document: its own "$schema" and
		// "$id" would make it a separate resource for a validator.
		delete(data, "$schema")
		delete(data, "$id")
		var example any
		if err := json.Unmarshal(t.Example, &example); err != nil {
			return nil, fmt.Errorf("the example of %s: %w", t.Name, err)
		}
		data["examples"] = []any{example}
		name := schemaName(t.Name)
		schemas[name+"Data"] = data
		schemas[name] = obj{
			"type":        "object",
			"title":       t.Name,
			"description": t.Description,
			"required":    []string{"type", "data"},
			"properties": obj{
				"id":        ref("EventID"),
				"type":      obj{"const": t.Name},
				"timestamp": ref("Timestamp"),
				"data":      ref(name + "Data"),
			},
			"additionalProperties": false,
		}
		events = append(events, ref(name))
	}
	schemas["Event"] = obj{
		"description": "One event. Its type names its data's schema; custom fields go inside data.",
		"oneOf":       events,
	}
	schemas["EventID"] = obj{
		"type":        "string",
		"minLength":   1,
		"maxLength":   MaxIDLength,
		"pattern":     "^[A-Za-z0-9_.:-]+$",
		"description": "The idempotency key: the same id posted again within the idempotency window (24 hours by default) is accepted once and delivered once. Omit it to have one generated (then a retried post is a new event). A producer that retries should send one.",
	}
	schemas["Timestamp"] = obj{
		"type":        "string",
		"format":      "date-time",
		"description": "When the event happened (RFC 3339); the time it was accepted when omitted.",
	}

	retryAfter := obj{
		"description": "Seconds to wait before posting again.",
		"schema":      obj{"type": "integer", "minimum": 0},
	}
	errResp := func(desc string, retry bool) obj {
		r := obj{
			"description": desc,
			"content":     obj{"application/json": obj{"schema": ref("Error")}},
		}
		if retry {
			r["headers"] = obj{"Retry-After": retryAfter}
		}
		return r
	}
	doc := obj{
		"openapi": "3.1.0",
		"info": obj{
			"title":   "WA Blast webhook operator: ingestion API",
			"version": "v1",
			"description": "The application posts its events here; the operator stores each durably before it answers 202, " +
				"then signs and delivers it (Standard Webhooks) to every WebhookConfig of the namespace that subscribes to its type. " +
				"See docs/events.md for the event types and docs/api.md for the rest of the interface.",
		},
		"servers":  []any{obj{"url": "/", "description": "The manager's ingestion address: the chart's <release>-webhook-operator-ingest Service; make dev prints its own."}},
		"security": []any{obj{"bearer": []string{}}},
		"paths": obj{
			"/v1/namespaces/{namespace}/events": obj{
				"parameters": []any{obj{
					"name": "namespace", "in": "path", "required": true,
					"description": "The namespace of the WebhookConfigs the event is for; the token must be allowed in it.",
					"schema":      obj{"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
				}},
				"post": obj{
					"operationId": "postEvents",
					"summary":     "Post one event, or a batch of up to 1,000 as NDJSON",
					"description": "One event as a JSON object (application/json), or a batch (application/x-ndjson, one event a line, at most " +
						fmt.Sprint(MaxBatchEvents) + " lines and 8 MiB by default): every line is validated first, and either all are accepted or none. " +
						"An event is at most 256 KiB by default.",
					"requestBody": obj{
						"required": true,
						"content": obj{
							"application/json": obj{"schema": ref("Event")},
							"application/x-ndjson": obj{
								"schema":      obj{"type": "string", "description": "One Event (see the application/json schema) per line."},
								"x-line-item": ref("Event"),
							},
						},
					},
					"responses": obj{
						"202": obj{
							"description": "Stored durably: every event of the request will be delivered (or is a duplicate).",
							"content":     obj{"application/json": obj{"schema": obj{"oneOf": []any{ref("Accepted"), ref("AcceptedBatch")}}}},
						},
						"400": errResp("Malformed JSON, an invalid event (unknown field, bad id or timestamp), an invalid batch (the bad lines are named) or an invalid namespace.", false),
						"401": errResp("No token, or a token that is not valid for this namespace.", false),
						"403": errResp("The token's identity may not post events into this namespace, or this operator does not serve it.", false),
						"413": errResp("An event or a batch over its size limit.", false),
						"415": errResp("A Content-Type other than application/json or application/x-ndjson.", false),
						"422": errResp("An unknown or reserved event type, or data that does not match the type's schema (every violation is listed).", false),
						"429": errResp("Too many requests with unknown tokens from this client, or overall.", true),
						"503": errResp("Nothing was stored: the store is unavailable or full, authentication is unavailable, or the manager is at its memory bound. Retry after Retry-After.", true),
					},
				},
			},
			"/v1/event-types": obj{
				"get": obj{
					"operationId": "listEventTypes",
					"summary":     "The event catalog: every type with its description, data schema and example",
					"security":    []any{},
					"responses":   obj{"200": obj{"description": "The catalog.", "content": obj{"application/json": obj{"schema": ref("EventTypeList")}}}},
				},
			},
			OpenAPIPath: obj{
				"get": obj{
					"operationId": "getOpenAPI",
					"summary":     "This document",
					"security":    []any{},
					"responses":   obj{"200": obj{"description": "The OpenAPI document.", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}},
				},
			},
			"/healthz": obj{
				"get": obj{
					"operationId": "healthz",
					"security":    []any{},
					"responses":   obj{"200": obj{"description": "Serving.", "content": obj{"application/json": obj{"schema": ref("Status")}}}},
				},
			},
			"/readyz": obj{
				"get": obj{
					"operationId": "readyz",
					"security":    []any{},
					"responses": obj{
						"200": obj{"description": "Ready to accept events.", "content": obj{"application/json": obj{"schema": ref("Status")}}},
						"503": errResp("Not ready (code not_ready); the message says why.", false),
					},
				},
			},
		},
		"components": obj{
			"schemas": schemas,
			"securitySchemes": obj{
				"bearer": obj{
					"type": "http", "scheme": "bearer",
					"description": "A ServiceAccount token with the audience webhooks.wablast.io (allowed to create webhookevents.webhooks.wablast.io in the namespace), " +
						"or a static token from a Secret labelled webhooks.wablast.io/ingest-token: \"true\" in the namespace.",
				},
			},
		},
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ref is a JSON reference to a schema of the document's components.
func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

// schemaName is the component name of an event type: message.sent is
// MessageSent.
func schemaName(typ string) string {
	var b strings.Builder
	for part := range strings.SplitSeq(typ, ".") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

// errorCodes lists every error code the API answers with.
func errorCodes() []string {
	return []string{
		CodeMalformedJSON, CodeInvalidEvent, CodeInvalidBatch, CodeInvalidNamespace,
		CodeUnauthenticated, CodeForbidden, CodeNotFound, CodeMethodNotAllowed,
		CodeEventTooLarge, CodeBatchTooLarge, CodeUnsupportedMediaType,
		CodeUnknownEventType, CodeReservedEventType, CodeSchemaViolation,
		CodeTooManyRequests, CodeInternal, CodeStoreUnavailable, CodeStoreFull,
		CodeAuthUnavailable, CodeOverloaded, CodeNotReady,
	}
}

// handleOpenAPI serves GET /v1/openapi.json: the document, no auth.
func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(s.openAPI)
}
