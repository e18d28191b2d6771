// Package ingest is the dispatcher's ingestion API: the HTTP server the WA
// Blast application posts its events to.
//
// POST /v1/namespaces/{namespace}/events takes one event
// (application/json) or a batch of events (application/x-ndjson, one event
// a line, all or nothing), authorizes the bearer token for the namespace,
// validates each event against the catalog, hands the events to a
// delivery.Enqueuer, and answers 202 Accepted only once the Enqueuer has
// stored them. GET /v1/event-types serves the catalog; GET /healthz and
// GET /readyz are the probes.
//
// A Server is a controller-runtime manager.Runnable that runs on every
// replica, leader or not. Authorization sits behind the Authenticator
// interface; KubeAuthenticator implements it with static tokens kept in
// labelled Secrets, TokenReview and SubjectAccessReview.
package ingest
