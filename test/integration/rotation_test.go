package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
	"github.com/wablast/webhook-operator/internal/signing"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// signatureReceiver keeps, per test delivery's requestedAt token, which of
// two secrets its webhook-signature verifies with and how many signatures
// it carries.
type signatureReceiver struct {
	*httptest.Server
	newKey, oldKey [][]byte
	mu             sync.Mutex
	got            map[string]signatures
}

type signatures struct {
	count        int
	byNew, byOld bool
}

func newSignatureReceiver(t *testing.T, newSecret, oldSecret string) *signatureReceiver {
	t.Helper()
	nk, err := signing.ParseSecrets(newSecret)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := signing.ParseSecrets(oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	rc := &signatureReceiver{newKey: nk, oldKey: ok, got: map[string]signatures{}}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body) // a short body fails the verification below
		var s signatures
		s.count = len(strings.Fields(r.Header.Get("webhook-signature")))
		s.byNew = (&signing.Verifier{Keys: rc.newKey}).Verify(r.Header, body) == nil
		s.byOld = (&signing.Verifier{Keys: rc.oldKey}).Verify(r.Header, body) == nil
		var env struct {
			Data struct {
				RequestedAt string `json:"requestedAt"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &env) // a body that is not the envelope records under ""
		tok := env.Data.RequestedAt
		rc.mu.Lock()
		rc.got[tok] = s
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *signatureReceiver) of(token string) (signatures, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	s, ok := rc.got[token]
	return s, ok
}

// During a rotation's grace period (recorded on the Secret) every delivery
// is signed with the new and the old secret and status says when it ends;
// once it ended the manager signs with the new secret alone, by itself,
// and status no longer shows a rotation.
func TestRotationGracePeriodEndsByItself(t *testing.T) {
	ns := env.Namespace(t)
	startOperator(t, ns, t.TempDir())
	newSecret, err := signing.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	rc := newSignatureReceiver(t, newSecret, secret)
	createEndpoint(t, ns, "crm", rc.URL, 1) // its Secret holds `secret`, the old one
	waitReady(t, ns, "crm")

	// What kubectl webhook rotate-secret writes: the new secret first, the
	// old one beside it, and when the grace period ends.
	end := time.Now().Add(6 * time.Second).UTC().Truncate(time.Second)
	var sec corev1.Secret
	if err := env.Client.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: "crm-secret"}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{"secret": []byte(newSecret + "\n" + secret)}
	sec.Annotations = map[string]string{webhooksv1alpha1.AnnotationRotationEndsAt: end.Format(time.RFC3339)}
	if err := env.Client.Update(context.Background(), &sec); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		if got := getWHC(t, ns, "crm").Status.SecretRotationEndsAt; got == nil || !got.Time.Equal(end) {
			return fmt.Errorf("secretRotationEndsAt %v, want %v", got, end)
		}
		return nil
	})
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "during")
	waitLastTest(t, ns, "crm", "during")
	if s, ok := rc.of("during"); !ok || s.count != 2 || !s.byNew || !s.byOld {
		t.Errorf("during the grace period: %+v (received %v), want two signatures, by the new and the old secret", s, ok)
	}

	// The grace period ends; nothing touches the resource or the Secret.
	testutil.Eventually(t, 30*time.Second, func() error {
		if got := getWHC(t, ns, "crm").Status.SecretRotationEndsAt; got != nil {
			return fmt.Errorf("secretRotationEndsAt still %v", got)
		}
		return nil
	})
	if time.Now().Before(end) {
		t.Fatalf("the rotation was shown as ended before %v", end)
	}
	annotate(t, ns, "crm", webhooksv1alpha1.AnnotationTestRequestedAt, "after")
	waitLastTest(t, ns, "crm", "after")
	if s, ok := rc.of("after"); !ok || s.count != 1 || !s.byNew || s.byOld {
		t.Errorf("after the grace period: %+v (received %v), want one signature, by the new secret", s, ok)
	}
}
