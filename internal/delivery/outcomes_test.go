package delivery

import (
	"context"
	"fmt"
	"testing"
	"time"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/endpoint"
	"github.com/wablast/webhook-operator/internal/store"
)

// Outcomes waiting together are stored together: one message per endpoint.
func TestOutcomesWaitingTogetherAreStoredInOneMessagePerEndpoint(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := New(Options{Registry: endpoint.NewMemoryRegistry(), Store: st, HTTPClient: NewHTTPClient(nil)})
	if err != nil {
		t.Fatal(err)
	}
	var pending []pendingOutcome
	for i := range 60 {
		oc := finalOutcome(i)
		if i%3 == 0 {
			oc.UID, oc.Name = "uid-erp", "erp"
		}
		p := pendingOutcome{ocs: []*store.Outcome{&oc}, done: make(chan error, 1)}
		pending = append(pending, p)
		d.outcomes <- p
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); d.runOutcomeRecorder(quit) }()
	for i, p := range pending {
		select {
		case err := <-p.done:
			if err != nil {
				t.Fatalf("outcome %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("outcome %d was never stored", i)
		}
	}
	close(quit)
	<-done
	s, err := st.JetStream().Stream(ctx, store.StreamOutcomes)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Fatalf("60 outcomes of 2 endpoints were stored in %d messages, want 2", info.State.Msgs)
	}
	for _, subj := range []string{store.OutcomeSubject("shop", "crm"), store.OutcomeSubject("shop", "erp")} {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Fatal(err)
		}
		ocs, err := store.DecodeOutcomes(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{store.OutcomeSubject("shop", "crm"): 40, store.OutcomeSubject("shop", "erp"): 20}[subj]
		if len(ocs) != want {
			t.Errorf("%s holds %d outcomes, want %d", subj, len(ocs), want)
		}
		for _, oc := range ocs {
			if store.OutcomeSubject(oc.Namespace, oc.Name) != subj {
				t.Errorf("%s holds an outcome of %s/%s", subj, oc.Namespace, oc.Name)
			}
		}
	}
}

// Under load (outcomes of a message of several deliveries) the recorder
// waits up to the group commit delay for the next message's outcomes; a
// single outcome is stored at once.
func TestOutcomeRecorderWaitsOnlyUnderLoad(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d, err := New(Options{Registry: endpoint.NewMemoryRegistry(), Store: st, HTTPClient: NewHTTPClient(nil), GroupCommitDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); d.runOutcomeRecorder(quit) }()
	defer func() { close(quit); <-done }()
	record := func(from, n int) chan error {
		ocs := make([]*store.Outcome, n)
		for i := range ocs {
			oc := finalOutcome(from + i)
			ocs[i] = &oc
		}
		p := pendingOutcome{ocs: ocs, done: make(chan error, 1)}
		d.outcomes <- p
		return p.done
	}
	wait := func(what string, ch chan error) {
		t.Helper()
		select {
		case err := <-ch:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: not stored within 10s", what)
		}
	}
	wait("a single outcome", record(0, 1))
	two := record(10, 2)
	select {
	case err := <-two:
		t.Fatalf("the outcomes of a message of two were stored without waiting for more (err %v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	full := record(20, maxOutcomeBatch-2) // fills the write: the wait ends
	wait("the outcomes of a message of two", two)
	wait("the outcomes that filled the write", full)
	if n := streamMsgs(t, st, store.StreamOutcomes); n != 2 {
		t.Errorf("stored %d messages, want 2 (the single outcome, then one full write)", n)
	}
}

// finalOutcome is a succeeded outcome of event e<i>.
func finalOutcome(i int) store.Outcome {
	return store.Outcome{
		UID: "uid-crm", Namespace: "shop", Name: "crm", Generation: 1,
		EventID: fmt.Sprintf("e%d", i), EventType: "message.sent", Attempt: 1, Attempted: true,
		StatusCode: 200, Result: webhooksv1alpha1.ResultSucceeded, Reason: webhooksv1alpha1.ReasonDeliverySucceeded,
		Time: time.Now().UTC(), AcceptedAt: "2026-11-28T10:00:00Z",
	}
}
