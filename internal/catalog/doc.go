// Package catalog is the catalog of WA Blast event types: for each type, a
// description, the JSON Schema (draft 2020-12) of its data object and an
// example data object. The ingestion API validates every posted event against
// its type's schema, serves the catalog at GET /v1/event-types, and
// docs/events.md is rendered from it.
//
// The schemas and examples are embedded files, one pair per type, under
// schemas/ and examples/; they are compiled once, when the package is
// initialised.
package catalog
