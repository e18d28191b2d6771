package ui

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// keepAliveInterval is how often an idle event stream sends a comment, so
// proxies and the browser keep it open.
const keepAliveInterval = 15 * time.Second

// rewatchDelay is the pause before listing again after the API server
// refused or ended a watch with an error.
const rewatchDelay = 2 * time.Second

// handleWatch streams the namespace's WebhookConfigs as server-sent events:
// "snapshot" with every one (a JSON array of views), then "upsert" (one
// view) and "delete" ({"name": ...}) as the watch reports changes, and
// "problem" ({"message": ...}) when the API server refuses the list or the
// watch (the stream goes on and lists again). It ends when the request's
// context does: the browser left, or the server stops.
func (s *Server) handleWatch(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming is not supported", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	ctx := r.Context()
	send := func(event string, v any) error {
		data, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	for ctx.Err() == nil {
		if err := s.streamOnce(ctx, w, flusher, send); err != nil {
			if ctx.Err() != nil {
				return
			}
			if send("problem", errorBody{Message: err.Error()}) != nil {
				return // the browser went away
			}
			fmt.Fprintf(s.errLog, "GET /api/watch: %v\n", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(rewatchDelay):
			}
		}
	}
}

// streamOnce lists, sends the snapshot and streams the watch from the list's
// resource version until the watch ends (nil: list again) or fails.
func (s *Server) streamOnce(ctx context.Context, w http.ResponseWriter, flusher http.Flusher, send func(string, any) error) error {
	list, views, err := s.list(ctx)
	if err != nil {
		return err
	}
	if err := send("snapshot", views); err != nil {
		return err
	}
	opts := &client.ListOptions{Namespace: s.namespace, Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}}
	watcher, err := s.client.Watch(ctx, &webhooksv1alpha1.WebhookConfigList{}, opts)
	if err != nil {
		return fmt.Errorf("watching webhookconfigs in namespace %q: %w", s.namespace, err)
	}
	defer watcher.Stop()
	keepAlive := time.NewTicker(keepAliveInterval)
	defer keepAlive.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-keepAlive.C:
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return err
			}
			flusher.Flush()
		case ev, ok := <-watcher.ResultChan():
			if !ok {
				return nil // the API server ended the watch: list again
			}
			switch ev.Type {
			case watch.Added, watch.Modified:
				if whc, ok := ev.Object.(*webhooksv1alpha1.WebhookConfig); ok {
					if err := send("upsert", newView(whc)); err != nil {
						return err
					}
				}
			case watch.Deleted:
				if whc, ok := ev.Object.(*webhooksv1alpha1.WebhookConfig); ok {
					if err := send("delete", map[string]string{"name": whc.Name}); err != nil {
						return err
					}
				}
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				if apierrors.IsGone(err) || apierrors.IsResourceExpired(err) {
					return nil // too old a resource version: list again
				}
				return fmt.Errorf("watching webhookconfigs in namespace %q: %w", s.namespace, err)
			}
		}
	}
}
