//go:build reliability

package reliability

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// tcpProxy forwards a loopback port to the API server. cut closes the
// listener and every open connection, so that the manager sees exactly what
// it sees when the API server is down (connections reset, new ones
// refused); restore listens again on the same port.
type tcpProxy struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{addr: testutil.FreeAddr(t), target: target, conns: map[net.Conn]struct{}{}}
	if err := p.restore(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *tcpProxy) restore() error {
	var ln net.Listener
	var err error
	// The port was ours a moment ago; retry briefly if the kernel still holds it.
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.forward(c) })
		}
	})
	return nil
}

func (p *tcpProxy) forward(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	if p.ln == nil { // cut meanwhile
		p.mu.Unlock()
		_ = c.Close()
		_ = up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			_ = c.Close()
			_ = up.Close()
			p.mu.Lock()
			delete(p.conns, c)
			delete(p.conns, up)
			p.mu.Unlock()
		})
	}
	var wg sync.WaitGroup
	wg.Go(func() { _, _ = io.Copy(up, c); closeBoth() })
	wg.Go(func() { _, _ = io.Copy(c, up); closeBoth() })
	wg.Wait()
}

// cut closes the listener and every connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	}
}

// proxiedKubeconfig writes a copy of the admin kubeconfig whose server is the proxy.
func proxiedKubeconfig(t *testing.T, proxyAddr string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = proxyAddr
		c.Server = u.String()
	}
	path := filepath.Join(t.TempDir(), "proxied.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func apiServerHostPort(t *testing.T) string {
	t.Helper()
	host := env.Config.Host
	if !strings.Contains(host, "://") {
		host = "https://" + host
	}
	u, err := url.Parse(host)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// TestAPIServerOutage cuts the manager off the API server (a TCP proxy
// between them is closed: connections reset, new ones refused) for 30 s
// (10 s with -short). Events posted during the outage are accepted (the
// auth decision was cached before) and delivered during the outage, each
// with exactly the content posted, and status catches up once the API
// server is reachable again.
func TestAPIServerOutage(t *testing.T) {
	outage := 30 * time.Second
	if testing.Short() {
		outage = 10 * time.Second
	}
	proxy := newTCPProxy(t, apiServerHostPort(t))
	ns := env.Namespace(t)
	token := randomToken()
	createIngestToken(t, ns, token)
	rc := newReceiver(t, testutil.NewLedger(), answerOK)
	createEndpoint(t, ns, "crm", rc.URL+"/hooks/wa", policy{initialBackoff: 1})
	m := startManager(t, managerOptions{
		kubeconfig: proxiedKubeconfig(t, proxy.addr),
		dataDir:    t.TempDir(),
		extra:      []string{"--ingest-auth-cache-ttl", "2m"},
	})
	m.WaitReady(90 * time.Second)
	waitWHCReady(t, ns, "crm")

	// Warm the auth cache, and see one delivery counted in status.
	var all []string
	warm := idRange("warm", 0, 1)
	if _, code, body, err := postEvents(m.IngestAddr, ns, token, rc.ledger, events(warm, ""), true, false); code != http.StatusAccepted || err != nil {
		t.Fatalf("warm-up post: %d %s %v", code, body, err)
	}
	all = append(all, warm...)
	testutil.EventuallyEvery(t, 30*time.Second, 100*time.Millisecond, func() error {
		if c := statusCounters(t, ns, "crm"); c.Delivered != 1 {
			return fmt.Errorf("before the outage: %s", c)
		}
		return nil
	})

	// The outage.
	proxy.cut()
	cutAt := time.Now()
	var during []string
	codes := map[int]int{}
	var lastPost time.Time
	for i := 0; time.Since(cutAt) < outage-3*time.Second; i++ {
		ids := idRange("outage", i*10, 10)
		_, code, body, err := postEvents(m.IngestAddr, ns, token, rc.ledger, events(ids, ""), true, false)
		codes[code]++
		if code != http.StatusAccepted || err != nil {
			t.Errorf("post during the outage: %d %s %v", code, body, err)
		} else {
			during = append(during, ids...)
		}
		lastPost = time.Now()
		time.Sleep(time.Second)
	}
	// Everything posted during the outage arrives during the outage.
	testutil.EventuallyEvery(t, time.Until(cutAt.Add(outage)), 100*time.Millisecond, func() error {
		if miss := missing(rc, during); len(miss) > 0 {
			return fmt.Errorf("%d of %d events posted during the outage not delivered yet", len(miss), len(during))
		}
		return nil
	})
	var slowest time.Duration
	for _, id := range during {
		at := rc.firstOKAt(id)
		slowest = max(slowest, at.Sub(cutAt))
	}
	if !m.Running() {
		t.Fatalf("the manager exited during the outage")
	}
	duringStatus := statusCounters(t, ns, "crm")
	time.Sleep(time.Until(cutAt.Add(outage)))
	if err := proxy.restore(); err != nil {
		t.Fatal(err)
	}
	restoredAt := time.Now()
	all = append(all, during...)
	t.Logf("RESULT apiserver outage: %s outage; %d events posted during it (answers %v), all delivered during it (the last %s after the cut, last post %s after the cut); manager alive: %v",
		outage, len(during), codes, slowest.Round(time.Millisecond), lastPost.Sub(cutAt).Round(time.Millisecond), m.Running())

	after := idRange("after", 0, 10)
	if _, code, body, err := postEvents(m.IngestAddr, ns, token, rc.ledger, events(after, ""), true, false); code != http.StatusAccepted || err != nil {
		t.Fatalf("post after the outage: %d %s %v", code, body, err)
	}
	all = append(all, after...)

	// Status catches up.
	n := int64(len(all))
	testutil.EventuallyEvery(t, 90*time.Second, 100*time.Millisecond, func() error {
		c := statusCounters(t, ns, "crm")
		if c.Delivered != n || c.Sent != n || c.Pending != 0 || c.Failed != 0 {
			return fmt.Errorf("status %s, want %d delivered", c, n)
		}
		return nil
	})
	catchUp := time.Since(restoredAt)
	if miss := missing(rc, all); len(miss) > 0 {
		t.Errorf("%d events never delivered: %v", len(miss), firstN(miss, 5))
	}
	rc.checkContent(t, "apiserver outage", all)
	flushErrors := len(grepLog(m.LogText(), "Writing delivery status failed"))
	t.Logf("RESULT apiserver outage: status caught up %s after the API server came back (status read during the outage said %s); %d status write errors logged",
		catchUp.Round(time.Millisecond), duringStatus, flushErrors)
	if catchUp > 30*time.Second {
		t.Errorf("status took %s to catch up after the outage", catchUp)
	}

	// The controller works again too: a spec change is reconciled.
	w := getWHC(t, ns, "crm")
	w.Spec.URL = rc.URL + "/hooks/wa2"
	if err := env.Client.Update(t.Context(), w); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyEvery(t, 60*time.Second, 200*time.Millisecond, func() error {
		if g := getWHC(t, ns, "crm"); g.Status.ObservedGeneration != g.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", g.Status.ObservedGeneration, g.Generation)
		}
		return nil
	})
	t.Logf("RESULT apiserver outage: a spec change after the outage was reconciled %s after the API server came back", time.Since(restoredAt).Round(time.Millisecond))
}
