package deliveryapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliverylog"
)

var resource = deliveryv1alpha1.Resource("webhookdeliveries")

// Storage serves webhookdeliveries from the delivery log.
type Storage struct {
	reader *deliverylog.Reader
}

var (
	_ rest.Storage              = &Storage{}
	_ rest.Scoper               = &Storage{}
	_ rest.KindProvider         = &Storage{}
	_ rest.SingularNameProvider = &Storage{}
	_ rest.ShortNamesProvider   = &Storage{}
	_ rest.CategoriesProvider   = &Storage{}
	_ rest.Getter               = &Storage{}
	_ rest.Lister               = &Storage{}
	_ rest.Watcher              = &Storage{}
	_ rest.TableConvertor       = &Storage{}
)

// NewStorage returns the storage of webhookdeliveries over reader.
func NewStorage(reader *deliverylog.Reader) *Storage { return &Storage{reader: reader} }

// New implements rest.Storage.
func (s *Storage) New() runtime.Object { return &deliveryv1alpha1.WebhookDelivery{} }

// Destroy implements rest.Storage.
func (s *Storage) Destroy() {}

// NamespaceScoped implements rest.Scoper.
func (s *Storage) NamespaceScoped() bool { return true }

// Kind implements rest.KindProvider.
func (s *Storage) Kind() string { return "WebhookDelivery" }

// GetSingularName implements rest.SingularNameProvider.
func (s *Storage) GetSingularName() string { return "webhookdelivery" }

// ShortNames implements rest.ShortNamesProvider.
func (s *Storage) ShortNames() []string { return []string{"whd"} }

// Categories implements rest.CategoriesProvider.
func (s *Storage) Categories() []string { return []string{"wablast"} }

// NewList implements rest.Lister.
func (s *Storage) NewList() runtime.Object { return &deliveryv1alpha1.WebhookDeliveryList{} }

// Get implements rest.Getter: it folds the log of the name's WebhookConfig.
func (s *Storage) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	webhook, _, err := deliverylog.ParseName(name)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	_, last, err := s.reader.Bounds(ctx)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	ds, _, err := s.reader.Scan(ctx, ns, webhook, last)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	for _, d := range ds {
		if d.Object.Name == name {
			return d.Object, nil
		}
	}
	return nil, apierrors.NewNotFound(resource, name)
}

// query is what a list or watch selects.
type query struct {
	webhook string // the one WebhookConfig the field selector names, or ""
	labels  labels.Selector
	fields  fields.Selector
}

func newQuery(opts *metainternalversion.ListOptions) (query, error) {
	q := query{labels: labels.Everything(), fields: fields.Everything()}
	if opts == nil {
		return q, nil
	}
	if opts.LabelSelector != nil {
		q.labels = opts.LabelSelector
	}
	if opts.FieldSelector != nil {
		q.fields = opts.FieldSelector
		for _, r := range opts.FieldSelector.Requirements() {
			if !fieldLabels[r.Field] {
				return q, apierrors.NewBadRequest("field label not supported: " + r.Field)
			}
			if r.Field == "spec.webhook" && (r.Operator == selection.Equals || r.Operator == selection.DoubleEquals) {
				q.webhook = r.Value
			}
		}
	}
	return q, nil
}

func (q *query) matches(o *deliveryv1alpha1.WebhookDelivery) bool {
	if !q.labels.Matches(labels.Set(o.Labels)) {
		return false
	}
	return q.fields.Empty() || q.fields.Matches(fields.Set{
		"metadata.name": o.Name, "metadata.namespace": o.Namespace,
		"spec.webhook": o.Spec.Webhook, "spec.type": o.Spec.Type, "spec.eventID": o.Spec.EventID,
		"status.state": string(o.Status.State),
	})
}

// continueToken is a list page's continuation: the log sequence the list
// was read at (its resource version) and the first sequence of the last
// item returned; the next page holds the items older than that, as of the
// same sequence.
type continueToken struct {
	RV    uint64 `json:"rv"`
	Below uint64 `json:"below"`
	Index int    `json:"index"`
}

func parseRV(rv string) (uint64, error) {
	if rv == "" || rv == "0" {
		return 0, nil
	}
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("resourceVersion %q is not a delivery log sequence (an unsigned integer)", rv))
	}
	return n, nil
}

// List implements rest.Lister: newest first, paginated with limit and
// continue; every page is read as of the first page's resource version.
func (s *Storage) List(ctx context.Context, opts *metainternalversion.ListOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	q, err := newQuery(opts)
	if err != nil {
		return nil, err
	}
	first, last, err := s.reader.Bounds(ctx)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	var tok continueToken
	if opts != nil && opts.Continue != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(opts.Continue)
		if derr != nil || json.Unmarshal(raw, &tok) != nil || tok.RV == 0 {
			return nil, apierrors.NewBadRequest("continue token is not one this server issued")
		}
		if tok.RV+1 < first {
			return nil, apierrors.NewResourceExpired("the delivery log no longer holds this list's resource version; list again without continue")
		}
		last = tok.RV
	}
	ds, _, err := s.reader.Scan(ctx, ns, q.webhook, last)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	out := &deliveryv1alpha1.WebhookDeliveryList{}
	out.ResourceVersion = strconv.FormatUint(last, 10)
	limit := int64(0)
	if opts != nil {
		limit = opts.Limit
	}
	var prev *deliverylog.Delivery
	for _, d := range ds {
		if tok.Below != 0 && !d.Before(tok.Below, tok.Index) {
			continue
		}
		if !q.matches(d.Object) {
			continue
		}
		if limit > 0 && int64(len(out.Items)) == limit {
			raw, err := json.Marshal(continueToken{RV: last, Below: prev.FirstSeq, Index: prev.FirstIndex})
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			out.Continue = base64.RawURLEncoding.EncodeToString(raw)
			break
		}
		out.Items = append(out.Items, *d.Object)
		prev = d
	}
	return out, nil
}

// Watch implements rest.Watcher: every change after the resource version
// (with "" or "0": ADDED for every delivery first), as ADDED when a
// delivery appears, MODIFIED when an attempt or a resend joins it, and
// DELETED when it stops matching the selectors. Deliveries that age out of
// the log are not announced.
func (s *Storage) Watch(ctx context.Context, opts *metainternalversion.ListOptions) (watch.Interface, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	q, err := newQuery(opts)
	if err != nil {
		return nil, err
	}
	rv := uint64(0)
	if opts != nil {
		if rv, err = parseRV(opts.ResourceVersion); err != nil {
			return nil, err
		}
	}
	first, last, err := s.reader.Bounds(ctx)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	initial := rv == 0
	if initial {
		rv = last
	} else if rv+1 < first {
		return nil, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (the delivery log starts at %d)", rv, first))
	}
	ds, folder, err := s.reader.Scan(ctx, ns, q.webhook, rv)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watcher{ch: make(chan watch.Event, 100), cancel: cancel, matching: map[string]bool{}}
	for _, d := range ds {
		if q.matches(d.Object) {
			w.matching[d.Object.Name] = true
			if initial {
				w.ch <- watch.Event{Type: watch.Added, Object: d.Object.DeepCopy()}
			}
		}
	}
	go func() {
		defer close(w.ch)
		err := s.reader.Follow(ctx, ns, q.webhook, rv, folder, func(d *deliverylog.Delivery, created bool) {
			o := d.Object
			was := w.matching[o.Name]
			now := q.matches(o)
			var ev watch.Event
			switch {
			case now && (created || !was):
				ev = watch.Event{Type: watch.Added, Object: o.DeepCopy()}
			case now:
				ev = watch.Event{Type: watch.Modified, Object: o.DeepCopy()}
			case was:
				ev = watch.Event{Type: watch.Deleted, Object: o.DeepCopy()}
			default:
				return
			}
			w.matching[o.Name] = now
			select {
			case w.ch <- ev:
			case <-ctx.Done():
			}
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			select {
			case w.ch <- watch.Event{Type: watch.Error, Object: &apierrors.NewServiceUnavailable(err.Error()).ErrStatus}:
			case <-ctx.Done():
			}
		}
	}()
	return w, nil
}

// watcher is a watch.Interface fed by a Follow goroutine.
type watcher struct {
	ch       chan watch.Event
	cancel   context.CancelFunc
	once     sync.Once
	matching map[string]bool
}

func (w *watcher) Stop()                          { w.once.Do(w.cancel) }
func (w *watcher) ResultChan() <-chan watch.Event { return w.ch }
