package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wablast/webhook-operator/internal/testutil"
)

// managerProc is the manager binary run as its own process for the passes
// that measure what users run: loopback ports of its own, no metrics
// listener and no delivery API listener (their control planes have no
// aggregation layer; the delivery log is still kept), its log in dir.
type managerProc struct {
	ProbeAddr, IngestAddr, DataDir, LogPath string
	Pid                                     int

	cmd     *exec.Cmd
	logFile *os.File
	// exited is closed once the process has exited, with exitErr set: every
	// check sees it, so stop cannot wait forever for an exit a readiness
	// check consumed.
	exited  chan struct{}
	exitErr error
}

// startManagerProc starts bin against kubeconfig with its data directory and
// log under dir, and extra flags after the fixed ones.
func startManagerProc(bin, dir, kubeconfig string, extra ...string) (*managerProc, error) {
	probePort, err := testutil.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	ingestPort, err := testutil.FreeLoopbackPort()
	if err != nil {
		return nil, err
	}
	m := &managerProc{
		ProbeAddr:  fmt.Sprintf("127.0.0.1:%d", probePort),
		IngestAddr: fmt.Sprintf("127.0.0.1:%d", ingestPort),
		DataDir:    filepath.Join(dir, "data"),
		LogPath:    filepath.Join(dir, "manager.log"),
		exited:     make(chan struct{}),
	}
	if m.logFile, err = os.Create(m.LogPath); err != nil {
		return nil, err
	}
	m.cmd = exec.Command(bin, append([]string{
		"--data-dir", m.DataDir,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", m.ProbeAddr,
		"--ingest-bind-address", m.IngestAddr,
		"--delivery-api-bind-address", "0",
	}, extra...)...)
	m.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	m.cmd.Stdout, m.cmd.Stderr = m.logFile, m.logFile
	if err := m.cmd.Start(); err != nil {
		_ = m.logFile.Close()
		return nil, err
	}
	m.Pid = m.cmd.Process.Pid
	go func() {
		m.exitErr = m.cmd.Wait()
		close(m.exited)
	}()
	return m, nil
}

// Exited reports whether the process has exited.
func (m *managerProc) Exited() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}

// Failed is res failed with err, the exit status if the process has exited,
// and the tail of its log.
func (m *managerProc) Failed(res *result, err error) *result {
	if m.Exited() {
		err = fmt.Errorf("%w (the manager exited: %w)", err, m.exitErr)
	}
	tail, _ := os.ReadFile(m.LogPath)
	if len(tail) > 2000 {
		tail = tail[len(tail)-2000:]
	}
	return res.fail(fmt.Errorf("%w; manager log tail:\n%s", err, tail))
}

// NotReady is the failure of a readiness wait that gave up after d.
func (m *managerProc) NotReady(res *result, d time.Duration) *result {
	if m.Exited() {
		return m.Failed(res, errors.New("the manager exited before it was ready"))
	}
	return m.Failed(res, fmt.Errorf("the manager was not ready within %s", d))
}

// Stop sends SIGTERM, then SIGKILL after 30 s, and closes the log.
func (m *managerProc) Stop() {
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
	_ = m.logFile.Close() // the manager wrote it through its own descriptor
}
