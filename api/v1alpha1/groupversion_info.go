// Package v1alpha1 contains the API types of the webhooks.wablast.io group.
//
// +kubebuilder:object:generate=true
// +kubebuilder:ac:generate=true
// +kubebuilder:ac:output:package=../applyconfiguration
// +groupName=webhooks.wablast.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every type in this package.
	GroupVersion = schema.GroupVersion{Group: "webhooks.wablast.io", Version: "v1alpha1"}

	// SchemeGroupVersion is GroupVersion under the name client-go's
	// generated code (the apply configurations) uses.
	SchemeGroupVersion = GroupVersion

	// SchemeBuilder registers the types of this package with a runtime.Scheme.
	// It is apimachinery's, not controller-runtime's (deprecated there), so
	// the API package depends on apimachinery only.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the types of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// addKnownTypes registers the types of this package, and the meta/v1 options
// types (ListOptions and others) under its group version.
func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &WebhookConfig{}, &WebhookConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
