package deliveryapi

import (
	"context"
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

// columns are kubectl's columns for webhookdeliveries.
var columns = []metav1.TableColumnDefinition{
	{Name: "Name", Type: "string", Format: "name", Description: "<webhookconfig>.<event id>, the event id escaped"},
	{Name: "Webhook", Type: "string", Description: "The WebhookConfig"},
	{Name: "Type", Type: "string", Description: "The event's type"},
	{Name: "State", Type: "string", Description: "Pending, Retrying, Succeeded or Failed"},
	{Name: "Attempts", Type: "integer", Description: "Attempts made"},
	{Name: "Code", Type: "string", Description: "The HTTP status of the last attempt's answer"},
	{Name: "Last Attempt", Type: "string", Description: "How long ago the last attempt ended"},
	{Name: "Age", Type: "string", Description: "How long ago the event was accepted"},
}

// now is the table's clock.
var now = time.Now

// ConvertToTable implements rest.TableConvertor.
func (s *Storage) ConvertToTable(_ context.Context, obj runtime.Object, _ runtime.Object) (*metav1.Table, error) {
	t := &metav1.Table{ColumnDefinitions: columns}
	switch o := obj.(type) {
	case *deliveryv1alpha1.WebhookDelivery:
		t.ResourceVersion = o.ResourceVersion
		t.Rows = []metav1.TableRow{row(o)}
	case *deliveryv1alpha1.WebhookDeliveryList:
		t.ResourceVersion, t.Continue, t.RemainingItemCount = o.ResourceVersion, o.Continue, o.RemainingItemCount
		t.Rows = make([]metav1.TableRow, len(o.Items))
		for i := range o.Items {
			t.Rows[i] = row(&o.Items[i])
		}
	default:
		return nil, fmt.Errorf("cannot show a %T as a table", obj)
	}
	return t, nil
}

func row(o *deliveryv1alpha1.WebhookDelivery) metav1.TableRow {
	code, last := "-", "-"
	if n := len(o.Status.Attempts); n > 0 {
		a := &o.Status.Attempts[n-1]
		if a.StatusCode != 0 {
			code = strconv.Itoa(int(a.StatusCode))
		}
		last = ago(a.Time.Time)
	}
	return metav1.TableRow{
		Cells: []any{o.Name, o.Spec.Webhook, o.Spec.Type, string(o.Status.State), int64(len(o.Status.Attempts)), code, last,
			ago(o.CreationTimestamp.Time)},
		Object: runtime.RawExtension{Object: o},
	}
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now().Sub(t))
}
