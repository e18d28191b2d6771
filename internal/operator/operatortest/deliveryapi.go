package operatortest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/operator"
	"github.com/wablast/webhook-operator/internal/testutil"
)

// StartWithDeliveryAPI runs the operator for ns against env (started with
// testutil.EnvOptions{Aggregation: true}) with the delivery log and its API
// on, and routes delivery.wablast.io to it as a cluster would: a Service of
// type ExternalName (localhost, the API's port) and an APIService naming it,
// waited for until the API server reports it Available. It is stopped, and
// the APIService removed, when the test ends.
func StartWithDeliveryAPI(t testing.TB, env *testutil.Env, ns string) *operator.Operator {
	t.Helper()
	cfg := Config(t.TempDir())
	cfg.DeliveryLogRetention = time.Hour
	cfg.DeliveryAPIAddr = "127.0.0.1:0"
	in, err := Start(env.Config, ns, cfg, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := in.Stop(); err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	_, portText, err := net.SplitHostPort(in.Op.DeliveryAPIAddr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portText)
	ctx := context.Background()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "delivery-api"},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "https", Port: int32(port)}},
		},
	}
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	apiSvc := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]any{"name": "v1alpha1." + deliveryv1alpha1.GroupName},
		"spec": map[string]any{
			"group": deliveryv1alpha1.GroupName, "version": "v1alpha1",
			"service": map[string]any{"namespace": ns, "name": "delivery-api", "port": int64(port)},
			// The manager's certificate is self-signed for localhost.
			"insecureSkipTLSVerify": true,
			"groupPriorityMinimum":  int64(1000), "versionPriority": int64(15),
		},
	}}
	_ = env.Client.Delete(ctx, apiSvc.DeepCopy())
	testutil.Eventually(t, 20*time.Second, func() error { return env.Client.Create(ctx, apiSvc.DeepCopy()) })
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), apiSvc.DeepCopy()) })
	testutil.Eventually(t, 60*time.Second, func() error {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(apiSvc.GroupVersionKind())
		if err := env.Client.Get(ctx, types.NamespacedName{Name: apiSvc.GetName()}, got); err != nil {
			return err
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Available" {
				if m["status"] != "True" {
					return fmt.Errorf("APIService not available: %v: %v", m["reason"], m["message"])
				}
				return nil
			}
		}
		return errors.New("APIService has no Available condition yet")
	})
	return in.Op
}
