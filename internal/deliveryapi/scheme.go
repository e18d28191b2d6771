package deliveryapi

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
)

var (
	// Scheme holds the API's types: v1alpha1, also registered as the
	// internal version (the API serves one version, so there is nothing
	// to convert), and the meta types of list options and status.
	Scheme = runtime.NewScheme()
	// Codecs serves Scheme.
	Codecs = serializer.NewCodecFactory(Scheme)
)

// fieldLabels are the field selectors webhookdeliveries support.
var fieldLabels = map[string]bool{
	"metadata.name": true, "metadata.namespace": true,
	"spec.webhook": true, "spec.type": true, "spec.eventID": true, "status.state": true,
}

func init() {
	utilruntime.Must(deliveryv1alpha1.AddToScheme(Scheme))
	deliveryv1alpha1.AddKnownTypesTo(Scheme, schema.GroupVersion{Group: deliveryv1alpha1.GroupName, Version: runtime.APIVersionInternal})
	metav1.AddToGroupVersion(Scheme, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	Scheme.AddUnversionedTypes(unversioned, &metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	utilruntime.Must(Scheme.AddFieldLabelConversionFunc(deliveryv1alpha1.SchemeGroupVersion.WithKind("WebhookDelivery"),
		func(label, value string) (string, string, error) {
			if fieldLabels[label] {
				return label, value, nil
			}
			return "", "", fmt.Errorf("field label not supported: %s (supported: spec.webhook, spec.type, spec.eventID, status.state, metadata.name, metadata.namespace)", label)
		}))
}
