package controller

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
			return nil //nolint:nilerr // the manager is stopping, which is no failure of this runnable
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
		ep, _, _, cfgErr, err := w.reconciler.resolve(ctx, whc, false)
		if err != nil {
			if ctx.Err() != nil {
				return nil //nolint:nilerr // the manager is stopping, which is no failure of this runnable
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

// leaderCatchUp reconciles every WebhookConfig once when this replica becomes
// the leader, so that status skipped while it was not the leader is written.
type leaderCatchUp struct {
	reconciler *WebhookConfigReconciler
	cache      cache.Cache
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: it starts on election.
func (l *leaderCatchUp) NeedLeaderElection() bool { return true }

// Start reconciles every resource once.
func (l *leaderCatchUp) Start(ctx context.Context) error {
	if l.reconciler.IsLeader == nil {
		return nil // always the leader: the controller's own start covers it
	}
	if !l.cache.WaitForCacheSync(ctx) {
		return nil
	}
	var list webhooksv1alpha1.WebhookConfigList
	if err := l.cache.List(ctx, &list); err != nil {
		return fmt.Errorf("listing WebhookConfigs: %w", err)
	}
	for i := range list.Items {
		req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])}
		if _, err := l.reconciler.Reconcile(ctx, req); err != nil && ctx.Err() == nil {
			log.FromContext(ctx).Error(err, "Reconciling after election", "webhookconfig", req.NamespacedName)
		}
	}
	return nil
}
