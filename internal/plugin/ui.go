package plugin

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"runtime"

	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wablast/webhook-operator/internal/ui"
)

func newUICommand(o *options) *cobra.Command {
	var port int
	var noBrowser bool
	cmd := &cobra.Command{
		Use:   "ui [-n NAMESPACE] [--port 0] [--no-browser]",
		Short: "Open a local web page that shows and edits the namespace's WebhookConfigs",
		Long: `Start a web server on 127.0.0.1 that shows the WebhookConfigs of one namespace,
live, and edits them, with your kubeconfig's credentials: it adds no identity
or permission, so the page lets you do what kubectl lets you do, and a refused
action shows the API server's message.

The page lists the WebhookConfigs with the columns of "kubectl get whc", kept
live from a watch; edits one (or a new one) with a form saved by server-side
apply (field manager kubectl-webhook-ui), with the API server's validation
errors beside their fields; shows, generates and rotates the signing secret;
sends a test delivery and shows its outcome; lists the recent deliveries from
the delivery log and resends one; and documents every event type.

The address printed holds a random access token, which the page needs: only
who started the command can use it. Stop with Ctrl-C; nothing is left running.`,
		Example: `  # Open the page for namespace "shop" in the browser
  kubectl webhook ui -n shop

  # On a fixed port, without opening a browser (e.g. over an SSH tunnel)
  kubectl webhook ui --port 8765 --no-browser`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.runUI(cmd.Context(), port, noBrowser)
		},
	}
	cmd.Flags().IntVar(&port, "port", 0, "the port on 127.0.0.1 to listen on (0: any free port)")
	cmd.Flags().BoolVar(&noBrowser, "no-browser", false, "print the address only; do not open a browser")
	return cmd
}

// runUI serves the page until ctx ends (Ctrl-C).
func (o *options) runUI(ctx context.Context, port int, noBrowser bool) error {
	c, ns, err := o.connect()
	if err != nil {
		return err
	}
	wc, ok := c.(client.WithWatch)
	if !ok {
		return errors.New("the API client cannot watch")
	}
	srv, err := ui.New(ui.Options{Client: wc, Namespace: ns, Now: o.now, ErrLog: o.streams.ErrOut})
	if err != nil {
		return err
	}
	ln, err := ui.Listen(ctx, port)
	if err != nil {
		return err
	}
	url := srv.URL(ln.Addr())
	fmt.Fprintf(o.streams.Out, "Serving the WebhookConfigs of namespace %q with your kubeconfig's credentials.\nOpen %s\nPress Ctrl-C to stop.\n", ns, url)
	if !noBrowser {
		if err := openBrowser(ctx, url); err != nil {
			fmt.Fprintf(o.streams.ErrOut, "Could not open a browser (%v): open the address above yourself.\n", err)
		}
	}
	if err := srv.Serve(ctx, ln); err != nil {
		return fmt.Errorf("serving the page: %w", err)
	}
	fmt.Fprintln(o.streams.Out, "Stopped.")
	return nil
}

// openBrowser asks the desktop to open url and reaps the opener when it exits.
func openBrowser(ctx context.Context, url string) error {
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		cmd = exec.CommandContext(ctx, "open", url)
	case "windows":
		cmd = exec.CommandContext(ctx, "rundll32", "url.dll,FileProtocolHandler", url)
	default:
		cmd = exec.CommandContext(ctx, "xdg-open", url)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }() // the opener's exit status says nothing useful
	return nil
}
