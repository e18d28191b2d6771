package deliveryapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	utilcompatibility "k8s.io/apiserver/pkg/util/compatibility"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	"github.com/wablast/webhook-operator/internal/deliveryapi/openapi"
	"github.com/wablast/webhook-operator/internal/deliverylog"
)

// Options configures the API server.
type Options struct {
	// Listener serves the API (HTTPS). Either it or BindAddress.
	Listener net.Listener
	// BindAddress is host:port to listen on when Listener is nil.
	BindAddress string
	// CertDir holds tls.crt and tls.key (the chart mounts its serving
	// certificate there); when they are missing, a self-signed
	// certificate for localhost and 127.0.0.1 is generated into it.
	CertDir string
	// Kubernetes is the client configuration the server uses to delegate
	// authentication (TokenReview, and the front proxy's client CA in
	// kube-system/extension-apiserver-authentication) and authorization
	// (SubjectAccessReview) to the kube-apiserver.
	Kubernetes *restclient.Config
	// Reader reads the delivery log.
	Reader *deliverylog.Reader
	// Resender stores a delivery again for webhookdeliveries/resend; nil
	// serves no resend. NotRegistered is the error (wrapped) it returns for
	// a WebhookConfig it does not know.
	Resender      Resender
	NotRegistered error
}

// Server is the aggregated API server, a manager.Runnable.
type Server struct {
	generic *genericapiserver.GenericAPIServer
	tmp     string
}

// New builds the API server; Start runs it.
func New(opts Options) (*Server, error) {
	if opts.Reader == nil || opts.Kubernetes == nil {
		return nil, fmt.Errorf("the delivery API needs the delivery log and a Kubernetes client configuration")
	}
	tmp, err := os.MkdirTemp("", "webhook-operator-delivery-api-")
	if err != nil {
		return nil, err
	}
	srv := &Server{tmp: tmp}
	ok := false
	defer func() {
		if !ok {
			_ = os.RemoveAll(tmp)
		}
	}()
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := writeKubeconfig(opts.Kubernetes, kubeconfig); err != nil {
		return nil, err
	}

	serving := genericoptions.NewSecureServingOptions().WithLoopback()
	serving.Listener = opts.Listener
	if opts.Listener == nil {
		host, port, err := net.SplitHostPort(opts.BindAddress)
		if err != nil {
			return nil, fmt.Errorf("invalid delivery API bind address %q: %w", opts.BindAddress, err)
		}
		if host != "" {
			serving.BindAddress = net.ParseIP(host)
		}
		if _, err := fmt.Sscan(port, &serving.BindPort); err != nil {
			return nil, fmt.Errorf("invalid delivery API bind address %q: %w", opts.BindAddress, err)
		}
	}
	certDir := opts.CertDir
	if certDir == "" {
		certDir = filepath.Join(tmp, "certs")
	}
	serving.ServerCert.CertDirectory = certDir
	serving.ServerCert.PairName = "tls"
	if err := serving.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("creating the delivery API's self-signed certificate: %w", err)
	}
	authn := genericoptions.NewDelegatingAuthenticationOptions()
	authn.RemoteKubeConfigFile = kubeconfig
	authz := genericoptions.NewDelegatingAuthorizationOptions().WithAlwaysAllowPaths("/healthz", "/readyz", "/livez")
	authz.RemoteKubeConfigFile = kubeconfig

	cfg := genericapiserver.NewConfig(Codecs)
	cfg.EffectiveVersion = utilcompatibility.DefaultBuildEffectiveVersion()
	cfg.EnableMetrics = false
	cfg.EnableProfiling = false
	cfg.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
		return genericapiserver.DefaultBuildHandlerChain(withSince(h), c)
	}
	// The OpenAPI models: server-side apply's type converter needs them, and
	// the kube-apiserver merges them into its own (kubectl explain).
	namer := openapinamer.NewDefinitionNamer(Scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title, cfg.OpenAPIConfig.Info.Version = "WA Blast delivery log", "v1alpha1"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title, cfg.OpenAPIV3Config.Info.Version = "WA Blast delivery log", "v1alpha1"
	if err := serving.ApplyTo(&cfg.SecureServing, &cfg.LoopbackClientConfig); err != nil {
		return nil, err
	}
	if err := authn.ApplyTo(&cfg.Authentication, cfg.SecureServing, nil); err != nil {
		return nil, err
	}
	if err := authz.ApplyTo(&cfg.Authorization); err != nil {
		return nil, err
	}
	generic, err := cfg.Complete(nil).New("webhook-operator-delivery-api", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, err
	}
	info := genericapiserver.NewDefaultAPIGroupInfo(deliveryv1alpha1.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	deliveries := NewStorage(opts.Reader)
	resources := map[string]rest.Storage{"webhookdeliveries": deliveries}
	if opts.Resender != nil {
		resources["webhookdeliveries/resend"] = &ResendStorage{deliveries: deliveries, resender: opts.Resender, notRegistered: opts.NotRegistered}
	}
	info.VersionedResourcesStorageMap[deliveryv1alpha1.SchemeGroupVersion.Version] = resources
	if err := generic.InstallAPIGroup(&info); err != nil {
		return nil, err
	}
	srv.generic = generic
	ok = true
	return srv, nil
}

// NeedLeaderElection implements manager.LeaderElectionRunnable: every
// replica answers (any replica reads the whole log).
func (s *Server) NeedLeaderElection() bool { return false }

// Start serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	defer func() { _ = os.RemoveAll(s.tmp) }()
	return s.generic.PrepareRun().RunWithContext(ctx)
}

// writeKubeconfig writes cfg as a kubeconfig file: k8s.io/apiserver's
// delegating authentication and authorization take a file (or the
// in-cluster configuration).
func writeKubeconfig(cfg *restclient.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{
		Server: cfg.Host, CertificateAuthority: cfg.CAFile, CertificateAuthorityData: cfg.CAData,
		InsecureSkipTLSVerify: cfg.Insecure, TLSServerName: cfg.ServerName,
	}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{
		ClientCertificate: cfg.CertFile, ClientCertificateData: cfg.CertData,
		ClientKey: cfg.KeyFile, ClientKeyData: cfg.KeyData,
		Token: cfg.BearerToken, TokenFile: cfg.BearerTokenFile,
		Username: cfg.Username, Password: cfg.Password,
	}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	return clientcmd.WriteToFile(*kc, path)
}
