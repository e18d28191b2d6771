package ui

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// FieldManager is the server-side apply field manager of the page's saves.
const FieldManager = "kubectl-webhook-ui"

// shutdownTimeout bounds how long Serve waits for requests in flight once
// its context ends; the event streams end with the context at once.
const shutdownTimeout = 5 * time.Second

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Options configures a Server.
type Options struct {
	// Client talks to the API server with the user's credentials. It must
	// know the core, webhooks.wablast.io and delivery.wablast.io types.
	Client client.WithWatch
	// Namespace is the namespace the page shows.
	Namespace string
	// Now returns the current time (test tokens, rotations); time.Now when nil.
	Now func() time.Time
	// ErrLog receives one line per failed request to the API server
	// (method, path, status); io.Discard when nil. Never a secret.
	ErrLog io.Writer
}

// Server is the page's HTTP server. Create it with New, serve it with
// Serve (or mount Handler in a test server).
type Server struct {
	client    client.WithWatch
	namespace string
	now       func() time.Time
	errLog    io.Writer

	// token is the access token every request needs; cookieName the
	// cookie that carries it after the first request.
	token      string
	cookieName string
	// csrf is the token every change must carry in the X-CSRF-Token header.
	csrf string

	pages   *template.Template
	handler http.Handler
}

// New returns a Server for opts with a fresh random access token and CSRF
// token.
func New(opts Options) (*Server, error) {
	if opts.Client == nil {
		return nil, errors.New("ui: no API client")
	}
	if opts.Namespace == "" {
		return nil, errors.New("ui: no namespace")
	}
	s := &Server{client: opts.Client, namespace: opts.Namespace, now: opts.Now, errLog: opts.ErrLog}
	if s.now == nil {
		s.now = time.Now
	}
	if s.errLog == nil {
		s.errLog = io.Discard
	}
	var err error
	if s.token, err = randomToken(); err != nil {
		return nil, err
	}
	if s.csrf, err = randomToken(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(s.token))
	// Cookies are per host, not per port: each server's cookie has a name
	// of its own so two pages on two ports do not log each other out.
	s.cookieName = "wablast_ui_" + hex.EncodeToString(sum[:6])
	if s.pages, err = parseTemplates(); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	return s, nil
}

// randomToken returns 32 random bytes as 64 hex digits.
func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Handler returns the server's handler, every route behind the access
// checks.
func (s *Server) Handler() http.Handler { return s.handler }

// Token returns the access token. It is a credential: print it only to the
// user who started the server.
func (s *Server) Token() string { return s.token }

// URL returns the address to open: http://<addr>/?token=<the access token>.
func (s *Server) URL(addr net.Addr) string {
	return "http://" + loopbackHostPort(addr) + "/?" + url.Values{"token": {s.token}}.Encode()
}

// loopbackHostPort renders addr as 127.0.0.1:port (or [::1]:port).
func loopbackHostPort(addr net.Addr) string {
	if tcp, ok := addr.(*net.TCPAddr); ok {
		return net.JoinHostPort(tcp.IP.String(), strconv.Itoa(tcp.Port))
	}
	return addr.String()
}

// Listen opens the server's listener on 127.0.0.1:port; port 0 picks a free
// one.
func Listen(ctx context.Context, port int) (net.Listener, error) {
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("invalid port %d", port)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listening on 127.0.0.1:%d: %w", port, err)
	}
	return ln, nil
}

// Serve serves the page on ln until ctx ends, then stops: the event
// streams and their watches end with ctx, requests in flight get a few
// seconds, and ln is closed. It returns nil after a stop by ctx, or the
// error that stopped it otherwise.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Every request's context ends with ctx, so the event streams,
		// which never go idle by themselves, end with it too.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = hs.Close()
	}
	if serr := <-done; err == nil && !errors.Is(serr, http.ErrServerClosed) {
		err = serr
	}
	return err
}

// routes returns every route behind the access checks.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		panic(err) // the embedded directory exists
	}
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /new", s.handleNew)
	mux.HandleFunc("GET /webhooks/{name}", s.handleWebhook)
	mux.HandleFunc("GET /event-types", s.handleEventTypes)

	mux.HandleFunc("GET /api/webhookconfigs", s.handleList)
	mux.HandleFunc("GET /api/watch", s.handleWatch)
	mux.HandleFunc("POST /api/webhookconfigs", s.handleCreate)
	mux.HandleFunc("GET /api/webhookconfigs/{name}", s.handleGet)
	mux.HandleFunc("PUT /api/webhookconfigs/{name}", s.handleUpdate)
	mux.HandleFunc("POST /api/webhookconfigs/{name}/test", s.handleTest)
	mux.HandleFunc("POST /api/webhookconfigs/{name}/secret", s.handleShowSecret)
	mux.HandleFunc("POST /api/webhookconfigs/{name}/rotate", s.handleRotate)
	mux.HandleFunc("GET /api/webhookconfigs/{name}/deliveries", s.handleDeliveries)
	mux.HandleFunc("POST /api/webhookconfigs/{name}/resend", s.handleResend)
	mux.HandleFunc("POST /api/generate-secret", s.handleGenerateSecret)
	return s.guard(mux)
}
