package plugin

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEnvtestUICommandServesUntilCtrlC runs "kubectl webhook ui
// --no-browser" as users do, opens the address it prints, and stops it with
// Ctrl-C (SIGINT): it exits 0 and the port is closed. The page itself is
// tested in internal/ui and, in a browser, in test/ui.
func TestEnvtestUICommandServesUntilCtrlC(t *testing.T) {
	ns := env.Namespace(t)
	createWebhookConfig(t, ns, "crm", "")
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectl, "webhook", "ui", "--no-browser", "--port", "0", "-n", ns, "--kubeconfig", env.Kubeconfig)
	cmd.Env = append(os.Environ(), "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 10)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait()
	}()

	var address string
	var output []string
	for address == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the command ended before printing an address: %q, stderr %q", output, stderr.String())
			}
			output = append(output, line)
			if a, ok := strings.CutPrefix(line, "Open "); ok {
				address = a
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("no address printed within 30s: %q", output)
		}
	}
	u, err := url.Parse(address)
	if err != nil || u.Scheme != "http" || !strings.HasPrefix(u.Host, "127.0.0.1:") || len(u.Query().Get("token")) != 64 {
		t.Fatalf("address %q (%v), want http://127.0.0.1:PORT/?token=<64 hex digits>", address, err)
	}

	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + u.Host + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("without the token: %d, want 403", resp.StatusCode)
	}
	resp, err = c.Get(address)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), ns) || !strings.Contains(string(body), `"name":"crm"`) {
		t.Fatalf("the page: %d\n%s", resp.StatusCode, body)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for line := range lines {
		output = append(output, line)
	}
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if errors.As(err, &exit) || err != nil {
			t.Fatalf("after Ctrl-C: %v, stderr %q", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the command did not stop within 20s of Ctrl-C")
	}
	if last := output[len(output)-1]; last != "Stopped." {
		t.Errorf("last line %q, want Stopped.", last)
	}
	if conn, err := net.DialTimeout("tcp", u.Host, time.Second); err == nil {
		_ = conn.Close()
		t.Fatal("the port still accepts connections after Ctrl-C")
	}
	if strings.Contains(stderr.String(), u.Query().Get("token")) {
		t.Error("the access token is in the command's log")
	}
}
