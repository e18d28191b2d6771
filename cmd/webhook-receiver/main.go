// Command webhook-receiver is a demo receiver of WA Blast webhooks: it
// verifies each request's Standard Webhooks signature and prints the event.
// GET /stats returns what it has seen, for scripts and tests.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wablast/webhook-operator/internal/signing"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

type stats struct {
	mu       sync.Mutex
	Verified int64          `json:"verified"`
	Rejected int64          `json:"rejected"`
	ByType   map[string]int `json:"byType"`
	ids      map[string]struct{}
	Unique   int `json:"unique"`
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:9000", "The address to listen on.")
	secret := flag.String("secret", os.Getenv("WEBHOOK_SECRET"), "The signing secret (whsec_... or a raw string of 16+ bytes; several separated by spaces). Defaults to $WEBHOOK_SECRET.")
	secretFile := flag.String("secret-file", "", "Read the signing secret from this file instead.")
	status := flag.Int("status", http.StatusOK, "The HTTP status to answer verified requests with.")
	quiet := flag.Bool("quiet", false, "Do not print events, only count them.")
	flag.Parse()

	value := *secret
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return err
		}
		value = string(b)
	}
	keys, err := signing.ParseSecrets(value)
	if err != nil {
		return fmt.Errorf("a signing secret is required (--secret, --secret-file or $WEBHOOK_SECRET): %w", err)
	}
	verifier := &signing.Verifier{Keys: keys}
	st := &stats{ByType: map[string]int{}, ids: map[string]struct{}{}}
	out := log.New(os.Stdout, "", 0)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		st.mu.Lock()
		defer st.mu.Unlock()
		st.Unique = len(st.ids)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "reading body", http.StatusBadRequest)
			return
		}
		if err := verifier.Verify(r.Header, body); err != nil {
			st.mu.Lock()
			st.Rejected++
			st.mu.Unlock()
			out.Printf("%s REJECTED id=%s: %v", time.Now().Format(time.RFC3339), r.Header.Get(signing.HeaderID), err)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		var env struct {
			Type      string          `json:"type"`
			Timestamp string          `json:"timestamp"`
			Data      json.RawMessage `json:"data"`
		}
		_ = json.Unmarshal(body, &env)
		id := r.Header.Get(signing.HeaderID)
		st.mu.Lock()
		st.Verified++
		st.ByType[env.Type]++
		st.ids[id] = struct{}{}
		st.mu.Unlock()
		if !*quiet {
			out.Printf("%s verified id=%s type=%s data=%s", time.Now().Format(time.RFC3339), id, env.Type, strings.TrimSpace(string(env.Data)))
		}
		w.WriteHeader(*status)
	})

	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	fmt.Fprintf(os.Stderr, "webhook-receiver listening on http://%s (signatures verified with %d key(s))\n", *listen, len(keys))
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
