package deliveryapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"time"

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

// Get implements rest.Getter: it reads the records of that one delivery.
func (s *Storage) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	ns := genericapirequest.NamespaceValue(ctx)
	webhook, eventID, err := deliverylog.ParseName(name)
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	d, err := s.reader.Get(ctx, ns, webhook, eventID, math.MaxUint64)
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	if d == nil {
		return nil, apierrors.NewNotFound(resource, name)
	}
	return d.Object, nil
}

// query is what a list or watch selects.
type query struct {
	// webhook and eventID are the one WebhookConfig and the one event the
	// selectors name, or "": the log is read by their subjects.
	webhook, eventID string
	labels           labels.Selector
	fields           fields.Selector
}

func newQuery(opts *metainternalversion.ListOptions) (query, error) {
	q := query{labels: labels.Everything(), fields: fields.Everything()}
	if opts == nil {
		return q, nil
	}
	if opts.LabelSelector != nil {
		q.labels = opts.LabelSelector
		if reqs, ok := opts.LabelSelector.Requirements(); ok {
			for _, r := range reqs {
				v := r.Values()
				if r.Key() == deliveryv1alpha1.LabelWebhook && v.Len() == 1 &&
					(r.Operator() == selection.Equals || r.Operator() == selection.DoubleEquals || r.Operator() == selection.In) {
					q.webhook = v.List()[0]
				}
			}
		}
	}
	if opts.FieldSelector != nil {
		q.fields = opts.FieldSelector
		for _, r := range opts.FieldSelector.Requirements() {
			if !fieldLabels[r.Field] {
				return q, apierrors.NewBadRequest("field label not supported: " + r.Field)
			}
			if r.Operator != selection.Equals && r.Operator != selection.DoubleEquals {
				continue
			}
			switch r.Field {
			case "spec.webhook":
				q.webhook = r.Value
			case "spec.eventID":
				q.eventID = r.Value
			case "metadata.name":
				if webhook, eventID, err := deliverylog.ParseName(r.Value); err == nil {
					q.webhook, q.eventID = webhook, eventID
				}
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
// was read at (its resource version), the first sequence of the last item
// returned, and the list's since; the next page holds the items older than
// that, as of the same sequence.
type continueToken struct {
	RV    uint64    `json:"rv"`
	Below uint64    `json:"below"`
	Since time.Time `json:"since,omitzero"`
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
// With the webhook or the event named (spec.webhook, the webhook label,
// spec.eventID, metadata.name) only their subjects of the log are read,
// and a page reads about as many deliveries as it returns.
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
	since, _ := SinceFrom(ctx)
	var tok continueToken
	if opts != nil && opts.Continue != "" {
		raw, derr := base64.RawURLEncoding.DecodeString(opts.Continue)
		if derr != nil || json.Unmarshal(raw, &tok) != nil || tok.RV == 0 {
			return nil, apierrors.NewBadRequest("continue token is not one this server issued")
		}
		if tok.RV+1 < first {
			return nil, apierrors.NewResourceExpired("the delivery log no longer holds this list's resource version; list again without continue")
		}
		last, since = tok.RV, tok.Since
	}
	limit := 0
	if opts != nil && opts.Limit > 0 {
		limit = int(opts.Limit)
	}
	ds, more, err := s.reader.Page(ctx, deliverylog.Query{
		Namespace: ns, Webhook: q.webhook, EventID: q.eventID,
		First: first, UpTo: last, Below: tok.Below, Limit: limit, Since: since,
		Match: func(d *deliverylog.Delivery) bool { return q.matches(d.Object) },
	})
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	out := &deliveryv1alpha1.WebhookDeliveryList{Items: make([]deliveryv1alpha1.WebhookDelivery, 0, len(ds))}
	out.ResourceVersion = strconv.FormatUint(last, 10)
	for _, d := range ds {
		out.Items = append(out.Items, *d.Object)
	}
	if more && len(ds) > 0 {
		raw, err := json.Marshal(continueToken{RV: last, Below: ds[len(ds)-1].FirstSeq, Since: since})
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		out.Continue = base64.RawURLEncoding.EncodeToString(raw)
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
	folder := deliverylog.NewFolder(ns)
	var ds []*deliverylog.Delivery
	if initial {
		// Every current delivery is sent first: the whole selection is read.
		if ds, folder, err = s.reader.Scan(ctx, ns, q.webhook, rv); err != nil {
			return nil, apierrors.NewServiceUnavailable(err.Error())
		}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	w := &watcher{ch: make(chan watch.Event, 100), cancel: cancel, matching: map[string]bool{}}
	go func() {
		defer close(w.ch)
		// Sent from here, not before Watch returns: the channel's buffer
		// does not bound how many deliveries a watch starts with.
		for _, d := range ds {
			if !q.matches(d.Object) {
				continue
			}
			w.matching[d.Object.Name] = true
			select {
			case w.ch <- watch.Event{Type: watch.Added, Object: d.Object.DeepCopy()}:
			case <-ctx.Done():
				return
			}
		}
		loaded := func(d *deliverylog.Delivery) { w.matching[d.Object.Name] = q.matches(d.Object) }
		err := s.reader.Follow(ctx, ns, q.webhook, rv, folder, loaded, func(d *deliverylog.Delivery, created bool) {
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
