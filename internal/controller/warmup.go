package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// registryWarmer rebuilds the registry from the API server when the manager
// starts, before the dispatcher fans out its first event, so that no event is
// fanned out against a half-filled registry. It runs on every replica.
type registryWarmer struct {
	reconciler *WebhookConfigReconciler
	cache      cache.Cache
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every replica
// needs its own registry.
func (w *registryWarmer) NeedLeaderElection() bool { return false }

// Start lists every WebhookConfig, registers those that resolve, and marks
// the registry synced. Resources that do not resolve are left to the
// reconciler, which reports why on their status.
func (w *registryWarmer) Start(ctx context.Context) error {
	logger := log.FromContext(ctx).WithName("registry-warmup")
	if !w.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("waiting for the cache to sync")
	}
	var list webhooksv1alpha1.WebhookConfigList
	if err := w.cache.List(ctx, &list); err != nil {
		return fmt.Errorf("listing WebhookConfigs: %w", err)
	}
	registered := 0
	for i := range list.Items {
		whc := &list.Items[i]
		if !whc.DeletionTimestamp.IsZero() || !whc.IsEnabled() {
			continue
		}
		ep, _, cfgErr, err := w.reconciler.resolve(ctx, whc, false)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Error(err, "Resolving WebhookConfig", "webhookconfig", klog.KObj(whc))
			continue
		}
		if cfgErr != nil {
			continue
		}
		w.reconciler.Registry.Upsert(ep)
		registered++
	}
	w.reconciler.Registry.MarkSynced()
	logger.Info("Registry rebuilt", "webhookconfigs", len(list.Items), "registered", registered)
	<-ctx.Done()
	return nil
}
