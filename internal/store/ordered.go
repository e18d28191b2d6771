package store

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/apimachinery/pkg/types"
)

// The ordered deliveries of PerKey endpoints (spec.delivery.ordering). A
// PerKey endpoint's worker moves each delivery stored for it
// (WEBHOOK_DELIVERIES) into the subject of its ordering key here, in the
// order they were stored; the deliveries of one key are then made one
// after the other, the first message of the key's subject being the one
// attempted (see internal/delivery/ordered.go). A head that waits for a
// retry has its attempt and due time in a state subject of its own, one
// message kept (a rollup).
const (
	// StreamOrdered holds the key queues and their heads' retry state.
	StreamOrdered = "WEBHOOK_ORDERED"
	// SubjOrdered is the key queues' prefix: wh.ok.<ns>.<endpoint>.<key token>.
	SubjOrdered = "wh.ok"
	// SubjOrderState is the heads' state: wh.os.<ns>.<endpoint>.<key token>.
	SubjOrderState = "wh.os"
)

func orderedStreamConfig(replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamOrdered,
		Description: "Deliveries to PerKey endpoints, one subject per ordering key, in acceptance order",
		Subjects:    []string{SubjOrdered + ".>", SubjOrderState + ".>"},
		// Messages are removed one by one as their deliveries are done.
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.FileStorage,
		Replicas:  replicas,
		// A move repeated after a lost acknowledgement adds nothing.
		Duplicates: deliveriesDuplicateWindow,
		// The head of a key (the first message of its subject) is read from
		// the stream's leader, not with a direct get, which a replica that
		// lags behind may answer: a delivery just stored there could look
		// missing, and the key's queue empty.
		AllowRollup: true,
	}
}

// OrderKeyToken is the subject token of an ordering key: 22 characters of
// unpadded URL-safe base64 of its SHA-256 (128 bits), so any key, however
// long or whatever its characters, is one short token.
func OrderKeyToken(key string) string {
	sum := sha256.Sum256([]byte(key))
	return base64.RawURLEncoding.EncodeToString(sum[:16])
}

// OrderedSubject is the queue of one ordering key (by its token) of one endpoint.
func OrderedSubject(ns, name, token string) string {
	return SubjOrdered + "." + ns + "." + Token(name) + "." + token
}

// OrderedSubjects matches every key queue of one endpoint.
func OrderedSubjects(ns, name string) string {
	return SubjOrdered + "." + ns + "." + Token(name) + ".>"
}

// OrderStateSubject is the retry state of one key's head.
func OrderStateSubject(ns, name, token string) string {
	return SubjOrderState + "." + ns + "." + Token(name) + "." + token
}

// OrderStateSubjects matches every head state of one endpoint.
func OrderStateSubjects(ns, name string) string {
	return SubjOrderState + "." + ns + "." + Token(name) + ".>"
}

// OrderedKeyOfSubject parses a key queue's subject into its endpoint and key token.
func OrderedKeyOfSubject(subj string) (types.NamespacedName, string, bool) {
	parts := strings.Split(subj, ".")
	if len(parts) != 5 || parts[0]+"."+parts[1] != SubjOrdered {
		return types.NamespacedName{}, "", false
	}
	return types.NamespacedName{Namespace: parts[2], Name: strings.ReplaceAll(parts[3], "_", ".")}, parts[4], true
}

// OrderedMsg is d queued under its key's token, as a message of its own.
func OrderedMsg(ns, name string, uid types.UID, token string, d *Delivery) *nats.Msg {
	msg := DeliveryMsg(ns, name, uid, d)
	msg.Subject = OrderedSubject(ns, name, token)
	return msg
}

// HeadState is what a key's head carries between its attempts: the stream
// sequence of the head it is of, the attempts made and when the next is due.
type HeadState struct {
	Seq      uint64
	Attempts int
	Due      time.Time
}

// HeadStateMsg stores s as the only message of the key's state subject.
func HeadStateMsg(ns, name, token string, s HeadState) *nats.Msg {
	msg := nats.NewMsg(OrderStateSubject(ns, name, token))
	msg.Data = fmt.Appendf(nil, "%d %d %d", s.Seq, s.Attempts, s.Due.UnixNano())
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	return msg
}

// ParseHeadState reads a HeadStateMsg's data.
func ParseHeadState(data []byte) (HeadState, error) {
	f := strings.Fields(string(data))
	if len(f) != 3 {
		return HeadState{}, fmt.Errorf("head state %q: want three fields", data)
	}
	seq, err1 := strconv.ParseUint(f[0], 10, 64)
	n, err2 := strconv.Atoi(f[1])
	due, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return HeadState{}, fmt.Errorf("head state %q: not numbers", data)
	}
	return HeadState{Seq: seq, Attempts: n, Due: time.Unix(0, due)}, nil
}
