package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	deliveryv1alpha1 "github.com/wablast/webhook-operator/api/delivery/v1alpha1"
	webhooksv1alpha1 "github.com/wablast/webhook-operator/api/v1alpha1"
)

// displayName is how kubectl users invoke the plugin; help and usage say it.
const displayName = "kubectl webhook"

// defaultPollInterval is how often --wait reads the resource.
const defaultPollInterval = 250 * time.Millisecond

// options holds what every subcommand shares: the kubectl connection flags,
// the streams, and the seams tests replace.
type options struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams

	// now returns the current time; the test token and --since use it.
	now func() time.Time
	// pollInterval is how often --wait reads the resource.
	pollInterval time.Duration
	// newClient builds the API client. Defaults to one built from flags.
	newClient func() (client.Client, error)
}

// NewRootCommand returns the "kubectl webhook" command with its subcommands
// and kubectl's connection flags (-n, --context, --kubeconfig, ...). Output
// goes to streams.Out and diagnostics to streams.ErrOut; run it with Execute
// to get kubectl's error format and exit codes.
func NewRootCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return newRootCommand(&options{
		flags:        genericclioptions.NewConfigFlags(true),
		streams:      streams,
		now:          time.Now,
		pollInterval: defaultPollInterval,
	})
}

func newRootCommand(o *options) *cobra.Command {
	if o.newClient == nil {
		o.newClient = o.clientFromFlags
	}
	cmd := &cobra.Command{
		Use:   "kubectl-webhook",
		Short: "Test, inspect and replay WA Blast WebhookConfigs",
		Long: `Test, inspect and replay the webhook endpoints of the WA Blast webhook operator.

Each command works on a WebhookConfig of the current namespace (or -n). Test
deliveries and replays are requested through annotations on the resource and
carried out by the operator, which records the outcome in the resource's status.

"kubectl webhook ui" does the same, and edits WebhookConfigs, on a local web
page that uses your kubeconfig's credentials.

kubectl flags such as -n, --context and --kubeconfig go after the plugin name:
"kubectl webhook status crm -n shop", not "kubectl -n shop webhook status crm".`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: displayName},
		SilenceErrors: true,
		SilenceUsage:  true,
		// No Run: without a subcommand the help is printed.
	}
	// Completion still works through "kubectl-webhook __complete"; the
	// command that writes completion scripts is not part of the product.
	cmd.CompletionOptions.HiddenDefaultCmd = true
	cmd.SetIn(o.streams.In)
	cmd.SetOut(o.streams.Out)
	cmd.SetErr(o.streams.ErrOut)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w\nSee '%s --help' for usage", err, c.CommandPath())
	})
	o.flags.AddFlags(cmd.PersistentFlags())

	cmd.AddCommand(
		newTestCommand(o),
		newStatusCommand(o),
		newSecretCommand(o),
		newRotateSecretCommand(o),
		newReplayCommand(o),
		newDeliveriesCommand(o),
		newResendCommand(o),
		newEventTypesCommand(o),
		newUICommand(o),
	)
	return cmd
}

// Execute runs cmd (normally NewRootCommand's) with ctx and returns the
// process exit code: 0 on success; 1 on any error, which is printed to errOut
// as "error: <message>"; or the code of a command that reports an outcome
// through its exit code alone, such as a failed "test --wait".
func Execute(ctx context.Context, cmd *cobra.Command, errOut io.Writer) int {
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var exit *exitError
	if errors.As(err, &exit) {
		return exit.code
	}
	fmt.Fprintf(errOut, "error: %v\n", err)
	return 1
}

// exitError ends the process with code without printing anything: the
// command has already printed the outcome.
type exitError struct {
	code   int
	reason string
}

func (e *exitError) Error() string { return e.reason }

// scheme returns the types the plugin reads and writes.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(webhooksv1alpha1.AddToScheme(s))
	utilruntime.Must(deliveryv1alpha1.AddToScheme(s))
	return s
}

// clientFromFlags builds a client from the kubectl connection flags.
func (o *options) clientFromFlags() (client.Client, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	cfg.UserAgent = "kubectl-webhook"
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, fmt.Errorf("creating the API client: %w", err)
	}
	return c, nil
}

// connect returns the API client and the namespace to work in: -n, else the
// kubeconfig context's namespace, else "default".
func (o *options) connect() (client.Client, string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the namespace from the kubeconfig: %w", err)
	}
	c, err := o.newClient()
	if err != nil {
		return nil, "", err
	}
	return c, ns, nil
}

// getWebhookConfig connects and reads WebhookConfig name of the namespace in
// use, with an error that says what to do when it cannot.
func (o *options) getWebhookConfig(ctx context.Context, name string) (client.Client, string, *webhooksv1alpha1.WebhookConfig, error) {
	c, ns, err := o.connect()
	if err != nil {
		return nil, "", nil, err
	}
	var whc webhooksv1alpha1.WebhookConfig
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &whc); err != nil {
		return nil, "", nil, explainWebhookConfigError(err, "get", ns, name)
	}
	return c, ns, &whc, nil
}

// completeNames completes the NAME argument with the WebhookConfigs of the
// namespace; it completes nothing when the API server cannot be asked.
func (o *options) completeNames(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	c, ns, err := o.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var list webhooksv1alpha1.WebhookConfigList
	if err := c.List(cmd.Context(), &list, client.InNamespace(ns)); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(list.Items))
	for i := range list.Items {
		names = append(names, list.Items[i].Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// nameArg accepts exactly one positional argument, the WebhookConfig's name,
// and says how to call the command otherwise.
func nameArg(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 1 && args[0] != "":
		return nil
	case len(args) == 0 || args[0] == "":
		return fmt.Errorf("a WebhookConfig name is required: %s", cmd.UseLine())
	default:
		return fmt.Errorf("expected one WebhookConfig name, got %d arguments: %s", len(args), cmd.UseLine())
	}
}
