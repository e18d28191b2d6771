package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wablast/webhook-operator/internal/testutil"
)

func TestClusterFormingErrors(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 500, ErrorCode: 10005, Description: "no suitable peers for placement"}, true},
		{fmt.Errorf("creating: %w", &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}), true},
		{&jetstream.APIError{Code: 500, ErrorCode: 10009, Description: "JetStream cluster can not handle request"}, true},
		{jetstream.ErrJetStreamNotEnabled, true},
		{nats.ErrTimeout, true},
		{context.DeadlineExceeded, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
		{jetstream.ErrJetStreamNotEnabledForAccount, true}, // 503: the account's JetStream may still be starting
		{errors.New("nats: authorization violation"), false},
	} {
		if got := clusterForming(c.err); got != c.want {
			t.Errorf("clusterForming(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// Open with three replicas waits for a JetStream cluster whose third
// server is still starting (the R3 streams cannot be placed until it
// joins), instead of failing the manager's start.
func TestOpenWaitsForAFormingCluster(t *testing.T) {
	var ports, cports [3]int
	for i := range 3 {
		ports[i], cports[i] = testutil.FreePort(t), testutil.FreePort(t)
	}
	start := func(i int) *server.Server {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[j]))
			}
		}
		s, err := server.NewServer(&server.Options{
			ServerName: fmt.Sprintf("n%d", i), Host: "127.0.0.1", Port: ports[i],
			JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
			Cluster: server.ClusterOpts{Name: "forming", Host: "127.0.0.1", Port: cports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		if !s.ReadyForConnections(30 * time.Second) {
			t.Fatalf("nats node %d not ready", i)
		}
		t.Cleanup(s.Shutdown)
		return s
	}
	start(0)
	start(1)
	opened := make(chan error, 1)
	go func() {
		s, err := Open(context.Background(), Options{URL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0]), Replicas: 3})
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("Open returned before the third server started: %v", err)
	case <-time.After(2 * time.Second):
	}
	start(2)
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("Open did not return within 90s of the cluster forming")
	}
}
