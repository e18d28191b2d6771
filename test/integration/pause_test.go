package integration

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/testutil"
)

func setPaused(t *testing.T, ns, name string, paused bool) {
	t.Helper()
	w := getWHC(t, ns, name)
	patch := client.MergeFrom(w.DeepCopy())
	w.Spec.Paused = paused
	if err := env.Client.Patch(context.Background(), w, patch); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		w := getWHC(t, ns, name)
		ready := meta.FindStatusCondition(w.Status.Conditions, webhooksv1alpha1.ConditionReady)
		if w.Status.ObservedGeneration != w.Generation || ready == nil || ready.Status != "True" {
			return fmt.Errorf("generation %d observed %d, Ready %+v", w.Generation, w.Status.ObservedGeneration, ready)
		}
		if w.Status.Active == paused || strings.Contains(ready.Message, "paused") != paused {
			return fmt.Errorf("paused %v: active %v, Ready message %q", paused, w.Status.Active, ready.Message)
		}
		return nil
	})
}

// A paused endpoint keeps its events and sends nothing (beside an endpoint
// that is not paused and receives them all); unpaused, it gets the backlog,
// each event as posted.
func TestPausedEndpointKeepsEventsAndDeliversThemWhenUnpaused(t *testing.T) {
	ns := env.Namespace(t)
	r := startOperator(t, ns, t.TempDir())
	ledger := testutil.NewLedger()
	control := newRecordingReceiver(t, ledger, http.StatusOK)
	held := newRecordingReceiver(t, ledger, http.StatusOK)
	createEndpoint(t, ns, "control", control.URL, 3)
	createEndpoint(t, ns, "held", held.URL, 3)
	waitReady(t, ns, "control")
	waitReady(t, ns, "held")
	setPaused(t, ns, "held", true)

	const n = 5
	enqueue(t, r, ledger, ns, 0, n)
	all := func(string, string) bool { return true }
	// Quiescence: the events were stored for both endpoints at once; the one
	// not paused has them all, and the sync loop that starts workers has run
	// three more rounds since.
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := control.count(all); got != n {
			return fmt.Errorf("control received %d of %d", got, n)
		}
		if st := getWHC(t, ns, "control").Status; st.EventsDelivered != n {
			return fmt.Errorf("control delivered %d", st.EventsDelivered)
		}
		return nil
	})
	syncs := r.op.Dispatcher.Syncs()
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := r.op.Dispatcher.Syncs(); got < syncs+3 {
			return fmt.Errorf("%d sync rounds since, want 3", got-syncs)
		}
		return nil
	})
	if got := held.count(all); got != 0 {
		t.Fatalf("the paused endpoint received %d requests", got)
	}
	if st := getWHC(t, ns, "held").Status; st.TotalEventsSent != 0 || st.Active {
		t.Errorf("paused endpoint: sent %d, active %v", st.TotalEventsSent, st.Active)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := env.Kubectl(ctx, "get", "whc", "held", "-n", ns)
	if err != nil {
		t.Fatal(err, out)
	}
	lines := strings.Split(out, "\n")
	if got := columns(lines[0], lines[1]); got["ACTIVE"] != "false" || got["READY"] != "True" {
		t.Errorf("kubectl get whc of a paused endpoint: %q", got)
	}

	setPaused(t, ns, "held", false)
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := held.oracle.Unique(); got != n {
			return fmt.Errorf("after unpausing, %d of %d events arrived", got, n)
		}
		if st := getWHC(t, ns, "held").Status; st.EventsDelivered != n || st.TotalEventsSent != n {
			return fmt.Errorf("after unpausing: sent %d delivered %d", st.TotalEventsSent, st.EventsDelivered)
		}
		return nil
	})
	held.checkContent(t, ledger.IDs())
	control.checkContent(t, ledger.IDs())
}
