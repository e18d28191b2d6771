package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/semaphore"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/wablast/webhook-operator/internal/delivery"
)

const (
	// DefaultAddr is the listen address when Options.Addr is empty.
	DefaultAddr = ":8082"
	// DefaultMaxEventBytes is the per-event size limit when
	// Options.MaxEventBytes is 0.
	DefaultMaxEventBytes = 256 << 10
	// MaxBatchEvents is the most events one NDJSON batch may hold.
	MaxBatchEvents = 1000
	// DefaultMaxBatchBytes is the size limit of an NDJSON batch body when
	// Options.MaxBatchBytes is 0 (8 MiB), or MaxEventBytes if that is larger.
	DefaultMaxBatchBytes = 8 << 20
	// DefaultMaxDecodingBytes is Options.MaxDecodingBytes when 0 (32 MiB),
	// or MaxBatchBytes if that is larger.
	DefaultMaxDecodingBytes = 32 << 20
	// overloadRetryAfter is the Retry-After, in seconds, of a request
	// refused because MaxDecodingBytes are in use.
	overloadRetryAfter = 1

	// maxMaxEventBytes bounds Options.MaxEventBytes (64 MiB).
	maxMaxEventBytes = 64 << 20
	// maxMaxBatchBytes bounds Options.MaxBatchBytes and MaxDecodingBytes
	// (1 GiB).
	maxMaxBatchBytes = 1 << 30

	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 120 * time.Second
	// defaultShutdownTimeout is how long Start waits for in-flight requests
	// once its context is done.
	defaultShutdownTimeout = 25 * time.Second
	// enqueueTimeout bounds one Enqueue call; it stays under writeTimeout so
	// the client still gets the answer.
	enqueueTimeout = 20 * time.Second
)

// Options configure a Server.
type Options struct {
	// Addr is the TCP address to listen on, DefaultAddr (":8082") when
	// empty. Use "127.0.0.1:0" for a random port and read it with Addr.
	Addr string
	// Enqueuer stores accepted events. Required.
	Enqueuer delivery.Enqueuer
	// Auth authorizes bearer tokens per namespace. Required.
	Auth Authenticator
	// MaxEventBytes is the size limit of one event: of a JSON body, and of
	// each line of an NDJSON batch. DefaultMaxEventBytes (262144) when 0.
	MaxEventBytes int64
	// MaxBatchBytes is the size limit of an NDJSON batch body: over it the
	// answer is 413. DefaultMaxBatchBytes (8 MiB) when 0, or MaxEventBytes
	// if that is larger.
	MaxBatchBytes int64
	// MaxDecodingBytes bounds the request bodies held at once: read,
	// decoded or waiting to be stored. A request whose body does not fit
	// beside the others is answered 503 with Retry-After (at once when its
	// Content-Length says so, else as soon as its body outgrows the room),
	// so concurrent large posts cannot take the manager past its memory
	// limit. DefaultMaxDecodingBytes (32 MiB) when 0, or MaxBatchBytes if
	// that is larger; it may not be smaller than MaxBatchBytes.
	MaxDecodingBytes int64
	// Ready reports whether the server can accept events, for GET /readyz:
	// nil when ready, otherwise an error saying why not. Always ready when
	// nil.
	Ready func() error
	// Now returns the current time, the timestamp of events posted without
	// one. time.Now when nil.
	Now func() time.Time
	// NewID returns the id of an event posted without one. NewEventID when
	// nil.
	NewID func() string
	// Metrics counts the answers to posted events; nil counts nothing.
	Metrics *Metrics
	// Logger receives the server's logs. Tokens, secrets and event data are
	// never logged. Discards when zero.
	Logger logr.Logger
}

// Server is the ingestion API. It is a manager.Runnable that runs on every
// replica.
type Server struct {
	opts    Options
	handler http.Handler
	decoder decoder
	log     logr.Logger
	// eventTypes is the pre-rendered body of GET /v1/event-types.
	eventTypes []byte
	// openAPI is the pre-rendered body of GET /v1/openapi.json.
	openAPI []byte
	// decoding holds one unit per byte of the request bodies being read,
	// decoded or stored (Options.MaxDecodingBytes).
	decoding *semaphore.Weighted

	shutdownTimeout time.Duration
	// readHeaderTimeout and readTimeout drop clients that send too slowly;
	// fields so that tests can shorten them.
	readHeaderTimeout, readTimeout time.Duration

	mu      sync.Mutex
	addr    string
	started bool
}

var (
	_ manager.Runnable               = (*Server)(nil)
	_ manager.LeaderElectionRunnable = (*Server)(nil)
)

// New returns a Server for opts, or an error if a required option is
// missing or a value is out of range.
func New(opts Options) (*Server, error) {
	if opts.Enqueuer == nil {
		return nil, errors.New("ingest: Options.Enqueuer is required")
	}
	if opts.Auth == nil {
		return nil, errors.New("ingest: Options.Auth is required")
	}
	if opts.MaxEventBytes < 0 || opts.MaxEventBytes > maxMaxEventBytes {
		return nil, fmt.Errorf("ingest: Options.MaxEventBytes must be between 0 and %d, got %d", maxMaxEventBytes, opts.MaxEventBytes)
	}
	if opts.MaxEventBytes == 0 {
		opts.MaxEventBytes = DefaultMaxEventBytes
	}
	if opts.MaxBatchBytes < 0 || opts.MaxBatchBytes > maxMaxBatchBytes {
		return nil, fmt.Errorf("ingest: Options.MaxBatchBytes must be between 0 and %d, got %d", maxMaxBatchBytes, opts.MaxBatchBytes)
	}
	if opts.MaxBatchBytes == 0 {
		opts.MaxBatchBytes = max(DefaultMaxBatchBytes, opts.MaxEventBytes)
	}
	if opts.MaxDecodingBytes < 0 || opts.MaxDecodingBytes > maxMaxBatchBytes {
		return nil, fmt.Errorf("ingest: Options.MaxDecodingBytes must be between 0 and %d, got %d", maxMaxBatchBytes, opts.MaxDecodingBytes)
	}
	if opts.MaxDecodingBytes == 0 {
		opts.MaxDecodingBytes = max(DefaultMaxDecodingBytes, opts.MaxBatchBytes)
	}
	if opts.MaxDecodingBytes < max(opts.MaxBatchBytes, opts.MaxEventBytes) {
		return nil, fmt.Errorf("ingest: Options.MaxDecodingBytes (%d) must be at least MaxBatchBytes (%d) and MaxEventBytes (%d), or no batch could ever be read",
			opts.MaxDecodingBytes, opts.MaxBatchBytes, opts.MaxEventBytes)
	}
	if opts.Addr == "" {
		opts.Addr = DefaultAddr
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewID == nil {
		opts.NewID = NewEventID
	}
	eventTypes, err := renderEventTypes()
	if err != nil {
		return nil, fmt.Errorf("ingest: rendering the event types: %w", err)
	}
	openAPI, err := OpenAPI()
	if err != nil {
		return nil, fmt.Errorf("ingest: rendering the OpenAPI document: %w", err)
	}
	s := &Server{
		opts:              opts,
		decoder:           decoder{now: opts.Now, newID: opts.NewID},
		log:               opts.Logger,
		eventTypes:        eventTypes,
		openAPI:           openAPI,
		decoding:          semaphore.NewWeighted(opts.MaxDecodingBytes),
		shutdownTimeout:   defaultShutdownTimeout,
		readHeaderTimeout: readHeaderTimeout,
		readTimeout:       readTimeout,
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler, for tests and for serving it
// from another http.Server. It puts the server's logger in each request's
// context, and the client's address for the Authenticator's rate limits, as
// Start does once for all of them through BaseContext and ConnContext.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := withClientAddr(logr.NewContext(r.Context(), s.log), r.RemoteAddr)
		s.handler.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Addr returns the address the server listens on, such as
// "127.0.0.1:41234", once Start has bound it, and "" before.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// NeedLeaderElection returns false: every replica ingests.
func (s *Server) NeedLeaderElection() bool {
	return false
}

// Start listens on Options.Addr and serves until ctx is done, then shuts
// down gracefully: it stops accepting connections and waits up to 25
// seconds for in-flight requests to finish. It returns nil after a clean
// shutdown, and an error if it cannot listen, serving fails or in-flight
// requests outlive the shutdown timeout. A Server starts at most once.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("ingest: server already started")
	}
	s.started = true
	s.mu.Unlock()

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.opts.Addr, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr().String()
	s.mu.Unlock()

	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.readHeaderTimeout,
		ReadTimeout:       s.readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		// Requests keep running on shutdown: their context is not
		// cancelled when ctx is. It carries the logger, for the handlers
		// and the Authenticator.
		BaseContext: func(net.Listener) context.Context { return logr.NewContext(context.WithoutCancel(ctx), s.log) },
		// The client's address, once per connection rather than per request.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return withClientAddr(ctx, c.RemoteAddr().String())
		},
		ErrorLog: slog.NewLogLogger(logr.ToSlogHandler(s.log), slog.LevelError),
	}
	s.log.Info("Serving the ingestion API", "address", s.addr)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		return fmt.Errorf("serving the ingestion API: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("Shutting down the ingestion API", "timeout", s.shutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.shutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(shutdownCtx)
	if shutdownErr != nil {
		_ = srv.Close()
	}
	// Once shut down (or closed), Serve returns http.ErrServerClosed.
	serveErr := <-served
	if shutdownErr != nil {
		return fmt.Errorf("shutting down the ingestion API: %w", shutdownErr)
	}
	if !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("serving the ingestion API: %w", serveErr)
	}
	return nil
}
