package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group of the delivery log.
const GroupName = "delivery.wablast.io"

var (
	// SchemeGroupVersion is the group and version of every type in this package.
	SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// Resource is the group-qualified resource of name (for API errors).
func Resource(name string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(name).GroupResource()
}

func addKnownTypes(s *runtime.Scheme) error {
	AddKnownTypesTo(s, SchemeGroupVersion)
	metav1.AddToGroupVersion(s, SchemeGroupVersion)
	return nil
}

// AddKnownTypesTo registers the package's types under gv (the API server
// also registers them as its internal version: it serves only this one).
func AddKnownTypesTo(s *runtime.Scheme, gv schema.GroupVersion) {
	s.AddKnownTypes(gv, &WebhookDelivery{}, &WebhookDeliveryList{}, &WebhookDeliveryResend{})
}
