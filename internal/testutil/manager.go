package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// FreePort returns a loopback TCP port that was free a moment ago, chosen
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range). A port
// from that range can be taken between this check and the child's bind by
// any outgoing loopback connection (a test hammering the manager makes
// thousands), which failed a CI run with "bind: address already in use";
// ports below it are handed out only to whoever asks for them by number.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FreeLoopbackPort is FreePort for programs without a testing.TB (the
// benchmarks and hack tools).
func FreeLoopbackPort() (int, error) {
	low := ephemeralLow()
	for range 100 {
		port := low - 1 - rand.IntN(low-minPort)
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken; try another
		}
		_ = ln.Close() // only held to learn the port is free
		return port, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// minPort is the lowest port FreePort hands out.
const minPort = 10000

// ephemeralLow is the first port of the kernel's ephemeral range, 32768
// when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > minPort+1000 {
				return n
			}
		}
	}
	return 32768
}

// ManagerOptions configures a manager run as a child process.
type ManagerOptions struct {
	// Bin is the manager binary.
	Bin string
	// Args are the flags besides the bind addresses, which StartManager sets.
	Args []string
	// Env is added to the test's environment (KEY=value), e.g. GOMEMLIMIT.
	Env []string
	// Metrics serves metrics on a loopback port (MetricsAddr); off otherwise.
	Metrics bool
	// LogPath is the log file every generation appends to; default
	// manager.log in a temporary directory of the test.
	LogPath string
	// TailLines of the log are printed when the test fails (default 80), or
	// always with ShowLogs.
	TailLines int
	ShowLogs  bool
	// ArtifactsDir, when set, receives a copy of the log when the test ends.
	ArtifactsDir string
}

// ManagerProcess is the manager binary running as a child process on
// loopback ports chosen once, so that a restart serves the same addresses.
// It is stopped when the test ends.
type ManagerProcess struct {
	IngestAddr, ProbeAddr string
	// MetricsAddr is empty unless ManagerOptions.Metrics.
	MetricsAddr string
	LogPath     string

	t           testing.TB
	opts        ManagerOptions
	mu          sync.Mutex
	cmd         *exec.Cmd
	done        chan struct{}
	generations int
}

// StartManager starts the first generation of a manager process.
func StartManager(t testing.TB, opts ManagerOptions) *ManagerProcess {
	t.Helper()
	if opts.LogPath == "" {
		opts.LogPath = filepath.Join(t.TempDir(), "manager.log")
	}
	if opts.TailLines == 0 {
		opts.TailLines = 80
	}
	m := &ManagerProcess{
		IngestAddr: FreeAddr(t),
		ProbeAddr:  FreeAddr(t),
		LogPath:    opts.LogPath,
		t:          t,
		opts:       opts,
	}
	if opts.Metrics {
		m.MetricsAddr = FreeAddr(t)
	}
	m.Start()
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() || opts.ShowLogs {
			t.Logf("==== manager log (%s, last %d lines) ====\n%s", m.LogPath, opts.TailLines, Tail(m.LogText(), opts.TailLines))
		}
		if opts.ArtifactsDir != "" {
			_ = os.MkdirAll(opts.ArtifactsDir, 0o755)
			name := strings.ReplaceAll(t.Name(), "/", "_") + "." + filepath.Base(m.LogPath)
			_ = os.WriteFile(filepath.Join(opts.ArtifactsDir, name), []byte(m.LogText()), 0o644)
		}
	})
	return m
}

// Start runs one more generation of the process, appending to the same log.
func (m *ManagerProcess) Start() {
	m.t.Helper()
	metrics := "0"
	if m.MetricsAddr != "" {
		metrics = m.MetricsAddr
	}
	args := append([]string{
		"--ingest-bind-address", m.IngestAddr,
		// A port of its own: the default :8443 would collide between managers.
		"--delivery-api-bind-address", "127.0.0.1:0",
		"--health-probe-bind-address", m.ProbeAddr,
		"--metrics-bind-address", metrics,
	}, m.opts.Args...)
	f, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	m.generations++
	fmt.Fprintf(f, "==== generation %d started %s ====\n", m.generations, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(m.opts.Bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(m.opts.Env) > 0 {
		cmd.Env = append(os.Environ(), m.opts.Env...)
	}
	// Its own process group, so a signal to the test's group (Ctrl-C) is
	// not delivered to it twice.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		m.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = f.Close() // the child wrote the log through its own descriptor
		close(done)
	}()
	m.mu.Lock()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()
}

// Running reports whether the current generation is still alive.
func (m *ManagerProcess) Running() bool {
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// Pid returns the process id of the current generation, 0 before the
// first Start; for reading /proc/<pid> (memory, open files) while it runs.
func (m *ManagerProcess) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil || m.cmd.Process == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// WaitReady waits for /readyz of the probes and of the ingestion API; it
// fails the test at once if the process exits.
func (m *ManagerProcess) WaitReady(timeout time.Duration) {
	m.t.Helper()
	EventuallyEvery(m.t, timeout, 100*time.Millisecond, func() error {
		if !m.Running() {
			m.t.Fatalf("the manager exited; see %s", m.LogPath)
		}
		for _, u := range []string{"http://" + m.ProbeAddr + "/readyz", "http://" + m.IngestAddr + "/readyz"} {
			resp, err := http.Get(u)
			if err != nil {
				return err
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %d", u, resp.StatusCode)
			}
		}
		return nil
	})
}

// Kill9 sends SIGKILL to the current generation and waits for it to die.
func (m *ManagerProcess) Kill9() {
	m.t.Helper()
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		m.t.Fatalf("kill -9 %d: %v", cmd.Process.Pid, err)
	}
	<-done
}

// Stop ends the current generation: SIGTERM, then SIGKILL after 40 s.
func (m *ManagerProcess) Stop() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(40 * time.Second):
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// LogText is the whole log so far.
func (m *ManagerProcess) LogText() string {
	data, _ := os.ReadFile(m.LogPath)
	return string(data)
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// MetricSum scrapes the manager's metrics (ManagerOptions.Metrics must be
// set) and returns the sum of every series of the metric name, whatever
// its labels. A counter restarts at zero with each generation.
func (m *ManagerProcess) MetricSum(name string) (float64, error) {
	if m.MetricsAddr == "" {
		return 0, errors.New("the manager was started without metrics (ManagerOptions.Metrics)")
	}
	resp, err := http.Get("http://" + m.MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("/metrics: %s", resp.Status)
	}
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		series, value := line[:i], line[i+1:]
		if base, _, _ := strings.Cut(series, "{"); base != name {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("/metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// PeakRSS returns the current generation's peak resident set size
// (VmHWM in /proc/<pid>/status), in bytes.
func (m *ManagerProcess) PeakRSS() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", m.Pid()))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("VmHWM %q: %w", rest, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no VmHWM in /proc/<pid>/status")
}
