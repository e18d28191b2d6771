// Package store is the manager's durable store: the JetStream streams and
// their subjects and headers, the embedded NATS server, the on-disk
// idempotency index and retry queue it owns, and the binary encodings of
// what the streams carry (deliveries, outcomes, retries).
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"

	"github.com/wablast/webhook-operator/internal/idempotency"
	"github.com/wablast/webhook-operator/internal/retryqueue"
)

// JetStream names. Every stream uses the file store.
const (
	// StreamEvents holds accepted events until they are fanned out (work queue).
	StreamEvents = "WEBHOOK_EVENTS"
	// StreamDeliveries holds one message per pending delivery, one subject per
	// endpoint, and the scheduled retries (work queue, message schedules).
	StreamDeliveries = "WEBHOOK_DELIVERIES"
	// StreamFailed keeps deliveries that failed for good, for replay.
	StreamFailed = "WEBHOOK_FAILED"
	// StreamOutcomes carries every attempt's outcome to the stats aggregator.
	StreamOutcomes = "WEBHOOK_OUTCOMES"
	// BucketStats is the key-value bucket of per-endpoint counters.
	BucketStats = "WEBHOOK_STATS"

	SubjEvents = "wh.ev"
	// SubjOrderedEvents holds the events with an id (external NATS) that a
	// PerKey endpoint subscribed to when they were accepted: the leader
	// fans them out one after the other, in the order they were stored.
	SubjOrderedEvents = "wh.eo"
	SubjDeliver       = "wh.dl"
	SubjRetry         = "wh.rt"
	SubjFailed        = "wh.fl"
	SubjOutcomes      = "wh.oc"
	ConsumerFanout    = "fanout"
	// ConsumerOrderedFanout fans out SubjOrderedEvents, on the leader.
	ConsumerOrderedFanout = "fanout-ordered"
	ConsumerStats         = "stats"
)

// Message headers of stored events and deliveries.
const (
	HdrEventID     = "Wh-Event-Id"
	HdrEventType   = "Wh-Event-Type"
	HdrAcceptedAt  = "Wh-Accepted-At"
	HdrEndpoint    = "Wh-Endpoint"
	HdrEndpointUID = "Wh-Endpoint-Uid"
	HdrAttempt     = "Wh-Attempt"
	HdrFailedAt    = "Wh-Failed-At"
	HdrError       = "Wh-Error"
	// HdrReplacesFailure marks a replayed delivery with the time its event
	// had failed for good (Delivery.ReplacesFailure).
	HdrReplacesFailure = "Wh-Replaces-Failure"
	// HdrReplacesSuccess marks a resent delivery with the time its event
	// had been delivered (Delivery.ReplacesSuccess).
	HdrReplacesSuccess = "Wh-Replaces-Success"
)

// PublishAckTimeout bounds the wait for JetStream's acknowledgement of an
// asynchronous publish; past it the publish counts as failed and is retried
// (deduplicated by its message ID) or answered with 503.
const PublishAckTimeout = 10 * time.Second

// maxEndpointConsumers bounds the endpoints (WebhookConfigs) one store serves.
const maxEndpointConsumers = 1_000_000

// Options configures the durable store.
type Options struct {
	// DataDir is the embedded server's file store directory. Ignored with URL.
	DataDir string
	// URL of an external NATS cluster; empty runs an embedded server.
	URL string
	// Replicas of every stream and bucket (1 for the embedded server).
	Replicas int
	// FailedRetention is how long deliveries that failed for good are kept.
	FailedRetention time.Duration
	// IdempotencyWindow is how long an event ID is remembered (24h).
	IdempotencyWindow time.Duration
	// Logger says when Open waits for a JetStream cluster still forming.
	Logger logr.Logger
	// MaxBytes bounds what the store keeps: JetStream's file store, and
	// with the embedded server the idempotency index and the retry queue
	// together. From 90% of it new events are refused (Writable returns
	// ErrFull) until deliveries bring it under 80%; the embedded server's
	// JetStream is capped at it. 0: with the embedded server, 85% of the
	// file system that holds DataDir; with an external NATS, unbounded
	// here (the account's limits apply). Negative: unbounded.
	MaxBytes int64
	// Sync is how the embedded server makes writes durable against a
	// machine crash (a process crash loses nothing acknowledged either way):
	// SyncAlways flushes every write to disk before it is acknowledged; a
	// positive interval flushes every interval, so a power loss or kernel
	// crash can lose what was acknowledged within the last interval. Zero
	// is NATS's default, 2 minutes (the manager's --store-sync defaults to
	// 1s: BenchmarkStoreSync). Ignored with an external NATS (its
	// servers' sync_interval applies).
	Sync time.Duration
	// DeliveryLogRetention is how long the delivery log keeps a record
	// (--delivery-log-retention); 0 turns the log off.
	DeliveryLogRetention time.Duration
	// DeliveryLogMaxBytes caps the delivery log; the oldest records go
	// first. 0: DefaultDeliveryLogMaxBytes. With a bounded store it is
	// held to a quarter of MaxBytes, so the log never fills the store.
	DeliveryLogMaxBytes int64
	// DeliveryLogMaxRecords caps the delivery log's messages, the oldest
	// going first: the store keeps an index entry a delivery in memory, so
	// this bounds the log's memory whatever the bodies' size. 0:
	// DefaultDeliveryLogMaxRecords; negative: no cap.
	DeliveryLogMaxRecords int64
}

// SyncAlways is Options.Sync's value for a flush before every acknowledgement.
const SyncAlways time.Duration = -1

// ParseSync parses --store-sync: "always", or a positive Go duration.
func ParseSync(v string) (time.Duration, error) {
	if v == "always" {
		return SyncAlways, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("invalid --store-sync %q: want \"always\" or a positive duration such as 2m", v)
	}
	return d, nil
}

// Store is the connection to JetStream, and the embedded server when there is one.
type Store struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	opts Options
	kv   jetstream.KeyValue
	// index remembers the ids of the idempotency window on disk, with the
	// embedded server; nil with an external NATS, whose duplicate window
	// does (in the NATS servers' memory, not the manager's).
	index     *idempotency.Index
	stopIndex chan struct{}
	indexDone chan struct{}
	// retries keeps the deliveries waiting for their next attempt on disk,
	// with the embedded server; nil with an external NATS, where they are
	// JetStream message schedules.
	retries *retryqueue.Queue

	// capacity is the store's bound and usage (capacity.go).
	capacity     capacity
	stopCapacity chan struct{}
	capacityDone chan struct{}
}

// DedupeGuard is the events stream's own duplicate window with the
// embedded server, where the on-disk index keeps the idempotency window:
// it catches the same id posted twice at the same moment (both miss the
// index, JetStream keeps the first) and a producer's quick retry after an
// index write failed. Every id of the window is kept in memory, so it is
// short. Ids stored just before a crash that kept
// them from the index are recorded from the stream at the next start
// (reindex looks back reindexMargin before the latest id it holds).
const DedupeGuard = 30 * time.Second

// reindexMargin is how far before the index's latest id reindex reads the
// events stream at a start.
const reindexMargin = 2 * time.Minute

// deliveriesDuplicateWindow is the deliveries stream's duplicate window:
// its message IDs guard the fan-out (an event fanned out again after a
// crash, once the manager is back) and the split and replay writes, which
// are repeated within moments. Every ID of the window is kept in memory.
const deliveriesDuplicateWindow = time.Minute

// indexSyncInterval is the idempotency index's flush to the disk for the
// store's Options.Sync, so that both lose the same on a machine crash.
func indexSyncInterval(sync time.Duration) time.Duration {
	switch {
	case sync == SyncAlways:
		return -1
	case sync > 0:
		return sync
	default:
		return 2 * time.Minute // NATS's default sync interval
	}
}

// eventsDuplicateWindow is the events stream's duplicate window.
func (s *Store) eventsDuplicateWindow() time.Duration {
	if s.srv != nil {
		return min(DedupeGuard, s.opts.IdempotencyWindow)
	}
	return s.opts.IdempotencyWindow
}

// Open starts the embedded NATS server (unless opts.URL is set),
// connects, and creates or updates the streams and the stats bucket.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.FailedRetention <= 0 {
		opts.FailedRetention = 7 * 24 * time.Hour
	}
	if opts.IdempotencyWindow <= 0 {
		opts.IdempotencyWindow = 24 * time.Hour
	}
	if opts.Logger.GetSink() == nil {
		opts.Logger = logr.Discard()
	}
	s := &Store{opts: opts}
	s.capacity.limit.Store(resolveLimit(opts))
	connOpts := []nats.Option{
		nats.Name("webhook-operator"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		// Fail publishes at once while disconnected instead of buffering them:
		// the ingestion API must answer 503, not 202, when nothing was stored.
		nats.ReconnectBufSize(-1),
	}
	if opts.URL == "" {
		if opts.DataDir == "" {
			return nil, errors.New("a data directory is required for the embedded NATS server")
		}
		sopts := &server.Options{
			ServerName: "webhook-operator",
			DontListen: true,
			JetStream:  true,
			StoreDir:   opts.DataDir,
			// The hard cap: the store refuses new events (ErrFull) before it.
			JetStreamMaxStore: max(s.capacity.limit.Load(), 0),
			NoSigs:            true,
			NoLog:             true,
		}
		switch {
		case opts.Sync == SyncAlways:
			sopts.SyncAlways = true
		case opts.Sync > 0:
			sopts.SyncInterval = opts.Sync
		}
		srv, err := server.NewServer(sopts)
		if err != nil {
			return nil, fmt.Errorf("creating embedded NATS server: %w", err)
		}
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			srv.Shutdown()
			return nil, errors.New("embedded NATS server did not start within 30s")
		}
		s.srv = srv
		connOpts = append(connOpts, nats.InProcessServer(srv))
		memTable := pebbleMemTable(s.capacity.limit.Load())
		index, err := idempotency.Open(idempotency.Options{
			Dir:           filepath.Join(opts.DataDir, "idempotency"),
			MemTableBytes: memTable,
			Window:        opts.IdempotencyWindow,
			SyncInterval:  indexSyncInterval(opts.Sync),
			OnSyncError: func(err error) {
				opts.Logger.Error(err, "Flushing the idempotency index's log to the disk failed; retrying at the next interval")
			},
		})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.index = index
		retries, err := retryqueue.Open(retryqueue.Options{Dir: filepath.Join(opts.DataDir, "retries"), MemTableBytes: memTable})
		if err != nil {
			s.Close()
			return nil, err
		}
		s.retries = retries
	}
	nc, err := nats.Connect(opts.URL, connOpts...)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	s.nc = nc
	// An asynchronous publish whose acknowledgement is lost (the stream's
	// leader went away with a NATS node, the connection moved to another
	// node) would otherwise be waited for forever: the fan-out workers
	// waiting on it would stop the fan-out, and every replica with them.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(PublishAckTimeout))
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	s.js = js
	if err := s.ensure(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := s.checkCapacity(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("reading the store's usage: %w", err)
	}
	s.stopCapacity, s.capacityDone = make(chan struct{}), make(chan struct{})
	go s.watchCapacity(s.stopCapacity, s.capacityDone)
	if s.index != nil {
		if err := s.reindex(ctx); err != nil {
			s.Close()
			return nil, err
		}
		s.stopIndex, s.indexDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(s.indexDone)
			s.index.Run(s.stopIndex, time.Minute, time.Now, func(err error) {
				s.opts.Logger.Error(err, "Expiring old event ids from the idempotency index failed; retrying in a minute")
			})
		}()
	}
	return s, nil
}

// reindex records in the index the events with ids that the events stream
// holds from shortly before the latest one the index has on: those stored
// just before a crash that came between JetStream's acknowledgement and the
// index's write, and, on the first start with an index, every event of the
// window (the ids that JetStream's duplicate window held before).
func (s *Store) reindex(ctx context.Context) error {
	info, err := s.js.Stream(ctx, StreamEvents)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", StreamEvents, err)
	}
	if info.CachedInfo().State.Msgs == 0 {
		return nil
	}
	// A plain ephemeral pull consumer without acknowledgements: each fetch
	// goes on where the last one ended (an ordered consumer's FetchNoWait
	// starts again from the beginning every time).
	cfg := jetstream.ConsumerConfig{
		Description:       "Records stored events' ids in the idempotency index at a start",
		FilterSubject:     SubjEvents + ".>",
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: time.Minute,
	}
	if last := s.index.Last(); !last.IsZero() {
		start := last.Add(-reindexMargin)
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &start
	}
	cons, err := s.js.CreateConsumer(ctx, StreamEvents, cfg)
	if err != nil {
		return fmt.Errorf("reading stream %s for the idempotency index: %w", StreamEvents, err)
	}
	defer func() { _ = s.js.DeleteConsumer(context.WithoutCancel(ctx), StreamEvents, cons.CachedInfo().Name) }()
	remaining := cons.CachedInfo().NumPending
	started, n := time.Now(), 0
	batch := make([]idempotency.Entry, 0, 1000)
	for remaining > 0 {
		// Exactly what is left (at most 1,000): the fetch returns as soon as
		// it has them, without waiting for more.
		msgs, err := cons.Fetch(int(min(remaining, 1000)), jetstream.FetchMaxWait(30*time.Second))
		if err != nil {
			return fmt.Errorf("reading stream %s for the idempotency index: %w", StreamEvents, err)
		}
		got := 0
		for m := range msgs.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			remaining = meta.NumPending
			ns := strings.TrimPrefix(m.Subject(), SubjEvents+".")
			at, perr := time.Parse(time.RFC3339Nano, m.Headers().Get(HdrAcceptedAt))
			if perr != nil {
				at = meta.Timestamp
			}
			batch = append(batch, idempotency.Entry{Key: ns + "/" + m.Headers().Get(HdrEventID), At: at})
		}
		if err := msgs.Error(); err != nil {
			return fmt.Errorf("reading stream %s for the idempotency index: %w", StreamEvents, err)
		}
		if err := s.index.Record(batch...); err != nil {
			return err
		}
		n += len(batch)
		batch = batch[:0]
		if got == 0 {
			return fmt.Errorf("reading stream %s for the idempotency index: no message within 30s, %d left", StreamEvents, remaining)
		}
	}
	if n > 0 {
		s.opts.Logger.Info("Recorded the ids of stored events in the idempotency index", "events", n, "took", time.Since(started).Round(time.Millisecond))
	}
	return nil
}

func (s *Store) ensure(ctx context.Context) error {
	streams := []jetstream.StreamConfig{{
		Name:        StreamEvents,
		Description: "Accepted WA Blast events, kept for the idempotency window",
		Subjects:    []string{SubjEvents + ".>", SubjOrderedEvents + ".>"},
		// Kept for the whole idempotency window, not deleted once fanned out:
		// JetStream rebuilds its duplicate window from the stored messages
		// when it restarts, so an event ID is remembered for 24 hours across
		// restarts only if its event is still stored.
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     s.opts.IdempotencyWindow,
		Storage:    jetstream.FileStorage,
		Replicas:   s.opts.Replicas,
		Duplicates: s.eventsDuplicateWindow(),
	}, {
		Name:              StreamDeliveries,
		Description:       "Pending webhook deliveries, one subject per endpoint, and scheduled retries",
		Subjects:          []string{SubjDeliver + ".>", SubjRetry + ".>"},
		Retention:         jetstream.WorkQueuePolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          s.opts.Replicas,
		Duplicates:        deliveriesDuplicateWindow,
		AllowMsgSchedules: true,
		AllowRollup:       true,
		// One durable consumer per endpoint: lift the server's default limit
		// of 1,000 consumers per stream.
		MaxConsumers: maxEndpointConsumers,
	}, {
		Name:        StreamFailed,
		Description: "Deliveries that failed for good, kept for replay",
		Subjects:    []string{SubjFailed + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.opts.Replicas,
		MaxAge:      s.opts.FailedRetention,
	}, {
		Name:        StreamOutcomes,
		Description: "Outcomes of delivery attempts, folded into per-endpoint counters",
		Subjects:    []string{SubjOutcomes + ".>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.opts.Replicas,
		// No message IDs here: outcomes are stored in batches and the
		// aggregator deduplicates them (see dedupeKey).
	}}
	streams = append(streams, orderedStreamConfig(s.opts.Replicas))
	if s.opts.DeliveryLogRetention > 0 {
		streams = append(streams, jetstream.StreamConfig{
			Name:        StreamDeliveryLog,
			Description: "Every delivery and attempt, for the delivery.wablast.io API",
			Subjects:    []string{SubjDeliveryLog + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    s.opts.Replicas,
			MaxAge:      s.opts.DeliveryLogRetention,
			MaxBytes:    s.deliveryLogMaxBytes(),
			MaxMsgs:     s.deliveryLogMaxRecords(),
			// Reads of one delivery or one endpoint get messages by subject
			// (deliverylog.Reader), from any replica of the stream.
			AllowDirect: true,
			Metadata:    map[string]string{deliveryLogFormatKey: deliveryLogFormat},
		})
	}
	give := time.Now().Add(formingWait) // for all of them together
	oldLog := false
	if s.opts.DeliveryLogRetention > 0 {
		if info, err := s.js.Stream(ctx, StreamDeliveryLog); err == nil {
			oldLog = info.CachedInfo().Config.Metadata[deliveryLogFormatKey] != deliveryLogFormat
		}
	}
	for _, cfg := range streams {
		if err := s.whileForming(ctx, give, func() error {
			_, err := s.js.CreateOrUpdateStream(ctx, cfg)
			return err
		}); err != nil {
			return fmt.Errorf("creating stream %s: %w", cfg.Name, err)
		}
	}
	if oldLog {
		if err := s.dropOldDeliveryLog(ctx); err != nil {
			return err
		}
	}
	var kv jetstream.KeyValue
	if err := s.whileForming(ctx, give, func() (err error) {
		kv, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      BucketStats,
			Description: "Per-endpoint delivery counters, keyed by WebhookConfig UID",
			Storage:     jetstream.FileStorage,
			Replicas:    s.opts.Replicas,
			History:     1,
		})
		return err
	}); err != nil {
		return fmt.Errorf("creating bucket %s: %w", BucketStats, err)
	}
	s.kv = kv
	return nil
}

// The delivery log stream's format, in its metadata: 2 is a subject a
// delivery (DeliveryLogSubject). A log without it is of the first format.
const (
	deliveryLogFormatKey = "webhooks.wablast.io/delivery-log-format"
	deliveryLogFormat    = "2"
)

// dropOldDeliveryLog removes the delivery log's records of its first
// format (one subject an endpoint, several deliveries a message), which
// the reader no longer reads, once: when the stream did not say it was of
// format 2.
func (s *Store) dropOldDeliveryLog(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, StreamDeliveryLog)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", StreamDeliveryLog, err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject(deliveryLogOldSubjects)); err != nil {
		return fmt.Errorf("dropping the delivery log's records of the first format: %w", err)
	}
	s.opts.Logger.Info("Dropped the delivery log's records of its first format (one subject a WebhookConfig): the deliveries logged before this upgrade are no longer listed")
	return nil
}

// deliveryLogMaxRecords is the delivery log stream's MaxMsgs (-1: none).
func (s *Store) deliveryLogMaxRecords() int64 {
	switch n := s.opts.DeliveryLogMaxRecords; {
	case n == 0:
		return DefaultDeliveryLogMaxRecords
	case n < 0:
		return -1
	default:
		return n
	}
}

// pebbleMemTable is the memtable size of the embedded store's Pebble
// stores (the idempotency index, the retry queue) under the store's bound
// limit: 4 MiB, less for a bound under 256 MiB. Each keeps its write-ahead
// logs, up to about four memtables' worth even when empty (Pebble reuses
// them), and that disk counts against the bound: a small bound would
// otherwise be taken by empty stores' logs and stay full.
func pebbleMemTable(limit int64) int64 {
	if limit <= 0 {
		return 4 << 20
	}
	return min(max(limit/64, 256<<10), 4<<20)
}

// deliveryLogMaxBytes is the delivery log stream's MaxBytes.
func (s *Store) deliveryLogMaxBytes() int64 {
	n := s.opts.DeliveryLogMaxBytes
	if n <= 0 {
		n = DefaultDeliveryLogMaxBytes
	}
	if limit := s.capacity.limit.Load(); limit > 0 {
		n = min(n, limit/4)
	}
	return n
}

// DeliveryLog reports whether the delivery log is kept.
func (s *Store) DeliveryLog() bool { return s.opts.DeliveryLogRetention > 0 }

// formingWait bounds how long Open waits for a JetStream cluster that
// is still forming (its servers starting together with the managers, as a
// Helm install or a rolling restart does) before it gives up.
const formingWait = 2 * time.Minute

// whileForming runs f until it succeeds, fails for a reason other than a
// JetStream cluster still forming, ctx ends, or the time give has passed.
func (s *Store) whileForming(ctx context.Context, give time.Time, f func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil || !clusterForming(err) || time.Now().After(give) {
			return err
		}
		s.opts.Logger.Info("JetStream is not ready yet; retrying", "reason", err.Error(), "retryIn", backoff)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// clusterForming reports whether err says that JetStream cannot place or
// serve a stream yet, as while its cluster is forming: no peers for the
// replicas asked for (10005), the system temporarily unavailable (10008),
// no leader to handle the request (10009), JetStream not answering at all
// (503), or a request that timed out.
func clusterForming(err error) bool {
	if apiErr, ok := errors.AsType[*jetstream.APIError](err); ok {
		switch apiErr.ErrorCode {
		case 10005, 10008, 10009:
			return true
		}
		return apiErr.Code == 503
	}
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders)
}

// Embedded reports whether the store is the manager's own embedded NATS
// server. Only one manager can use it (its file store is local), so nothing
// else delivers to the same endpoints.
func (s *Store) Embedded() bool { return s.srv != nil }

// JetStream returns the JetStream context.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Conn returns the store's NATS connection.
func (s *Store) Conn() *nats.Conn { return s.nc }

// StatsBucket returns the key-value bucket of per-endpoint counters
// (BucketStats).
func (s *Store) StatsBucket() jetstream.KeyValue { return s.kv }

// Close drains nothing: it closes the connection and shuts the embedded
// server down. Unacknowledged messages stay in the store for the next start.
func (s *Store) Close() {
	if s.stopCapacity != nil {
		close(s.stopCapacity)
		<-s.capacityDone
		s.stopCapacity = nil
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.srv != nil {
		s.srv.Shutdown()
		s.srv.WaitForShutdown()
	}
	if s.stopIndex != nil {
		close(s.stopIndex)
		<-s.indexDone
		s.stopIndex = nil
	}
	if s.index != nil {
		// Kept, closed: a request still being answered gets ErrClosed (a
		// 503), not a nil index.
		_ = s.index.Close()
	}
	if s.retries != nil {
		_ = s.retries.Close()
	}
}

// Retries returns the on-disk retry queue, or nil when retries are
// JetStream message schedules (an external NATS).
func (s *Store) Retries() *retryqueue.Queue { return s.retries }

// Index returns the on-disk idempotency index, or nil when the events
// stream's duplicate window keeps the ids (an external NATS).
func (s *Store) Index() *idempotency.Index { return s.index }

// Healthy returns nil when the store can acknowledge writes: it is
// connected, and not full (ErrFull).
func (s *Store) Healthy() error {
	if s.nc == nil || !s.nc.IsConnected() {
		return fmt.Errorf("%w: not connected to NATS", ErrUnavailable)
	}
	return s.Writable()
}

// Token makes a Kubernetes name usable as one NATS subject token: names may
// contain dots, subjects use them as separators. "_" is not allowed in
// Kubernetes names, so the mapping is one to one.
func Token(name string) string { return strings.ReplaceAll(name, ".", "_") }

// EventSubject is the subject the events accepted in namespace ns are
// stored under.
func EventSubject(ns string) string { return SubjEvents + "." + ns }

// OrderedEventSubject is EventSubject for events a PerKey endpoint subscribes to.
func OrderedEventSubject(ns string) string { return SubjOrderedEvents + "." + ns }

// NamespaceOfEventSubject returns the namespace of an EventSubject or OrderedEventSubject.
func NamespaceOfEventSubject(subj string) string {
	if ns, ok := strings.CutPrefix(subj, SubjOrderedEvents+"."); ok {
		return ns
	}
	return strings.TrimPrefix(subj, SubjEvents+".")
}

// DeliverSubject is the subject of the deliveries to endpoint ns/name.
func DeliverSubject(ns, name string) string { return SubjDeliver + "." + ns + "." + Token(name) }

// RetrySubjects matches the scheduled retries (an external NATS) of one endpoint.
func RetrySubjects(ns, name string) string { return SubjRetry + "." + ns + "." + Token(name) + ".>" }

// FailedSubject is the subject of the deliveries to endpoint ns/name that
// failed for good.
func FailedSubject(ns, name string) string { return SubjFailed + "." + ns + "." + Token(name) }

// OutcomeSubject is the subject of the attempts' outcomes of endpoint
// ns/name.
func OutcomeSubject(ns, name string) string { return SubjOutcomes + "." + ns + "." + Token(name) }

// EndpointOfSubject parses a delivery subject back into the endpoint's key.
func EndpointOfSubject(subj string) (types.NamespacedName, bool) {
	parts := strings.Split(subj, ".")
	if len(parts) != 4 || parts[0]+"."+parts[1] != SubjDeliver {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: parts[2], Name: strings.ReplaceAll(parts[3], "_", ".")}, true
}

// HashString returns a short stable hex digest of s.
func HashString(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}

// ConsumerName is the durable consumer of one endpoint's deliveries.
func ConsumerName(ns, name string) string {
	return "ep_" + HashString(ns+"/"+name)
}

// ErrUnavailable is returned by Enqueue when the event store cannot
// acknowledge the events; nothing returned with it was acknowledged.
var ErrUnavailable = errors.New("event store unavailable")
