package idempotency

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, dir string) *Index {
	t.Helper()
	x, err := Open(Options{Dir: dir, Window: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func mustClose(t *testing.T, x *Index) {
	t.Helper()
	if err := x.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func seen(t *testing.T, x *Index, key string, now time.Time) bool {
	t.Helper()
	ok, err := x.Seen(key, now)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestSeenWithinTheWindowOnly(t *testing.T) {
	x := open(t, t.TempDir())
	defer mustClose(t, x)
	if seen(t, x, "shop/a", t0) {
		t.Fatal("an unknown key is seen")
	}
	if err := x.Record(Entry{"shop/a", t0}); err != nil {
		t.Fatal(err)
	}
	if !seen(t, x, "shop/a", t0.Add(59*time.Minute)) {
		t.Fatal("a key recorded 59 minutes ago is not seen with a 1-hour window")
	}
	if seen(t, x, "shop/a", t0.Add(time.Hour)) {
		t.Fatal("a key recorded a window ago is still seen")
	}
	if seen(t, x, "other/a", t0) {
		t.Fatal("the same id in another namespace is seen")
	}
}

func TestSurvivesReopening(t *testing.T) {
	dir := t.TempDir()
	x := open(t, dir)
	var entries []Entry
	for i := range 1000 {
		entries = append(entries, Entry{fmt.Sprintf("shop/e-%d", i), t0.Add(time.Duration(i) * time.Millisecond)})
	}
	if err := x.Record(entries...); err != nil {
		t.Fatal(err)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	x = open(t, dir)
	defer mustClose(t, x)
	for _, e := range entries {
		if !seen(t, x, e.Key, t0.Add(time.Minute)) {
			t.Fatalf("%s is forgotten after reopening", e.Key)
		}
	}
	if want := t0.Add(999 * time.Millisecond); !x.Last().Equal(want) {
		t.Fatalf("Last = %v, want %v", x.Last(), want)
	}
	// Later records within lastStep do not write m/last each time: after a
	// reopening Last may lag behind the latest by less than lastStep.
	for i := range 10 {
		if err := x.Record(Entry{fmt.Sprintf("shop/f-%d", i), t0.Add(time.Second + time.Duration(i)*100*time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	latest := t0.Add(1900 * time.Millisecond)
	if !x.Last().Equal(latest) {
		t.Fatalf("Last = %v, want %v", x.Last(), latest)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	x = open(t, dir)
	defer mustClose(t, x)
	if got := x.Last(); got.After(latest) || latest.Sub(got) >= lastStep {
		t.Fatalf("after reopening Last = %v, want within %v before %v", got, lastStep, latest)
	}
}

func TestExpireForgetsOnlyWhatIsOld(t *testing.T) {
	x := open(t, t.TempDir())
	defer mustClose(t, x)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.Record(Entry{"ns/old", t0}, Entry{"ns/again", t0}, Entry{"ns/new", t0.Add(50 * time.Minute)}))
	// "again" expired once and was posted again later: its newer entry stays.
	must(x.Record(Entry{"ns/again", t0.Add(61 * time.Minute)}))
	n, err := x.Expire(t0.Add(61 * time.Minute))
	must(err)
	if n != 1 {
		t.Fatalf("Expire forgot %d keys, want 1 (ns/old)", n)
	}
	now := t0.Add(62 * time.Minute)
	if seen(t, x, "ns/old", now) || !seen(t, x, "ns/again", now) || !seen(t, x, "ns/new", now) {
		t.Fatal("Expire forgot the wrong keys")
	}
	// Nothing left to expire in the range already cut.
	if n, err := x.Expire(t0.Add(61 * time.Minute)); err != nil || n != 0 {
		t.Fatalf("a second Expire forgot %d (%v)", n, err)
	}
	// Everything goes once the window has passed for all.
	if n, err := x.Expire(t0.Add(3 * time.Hour)); err != nil || n != 2 {
		t.Fatalf("the last Expire forgot %d (%v), want 2", n, err)
	}
}

func TestAClosedIndexAnswersErrClosed(t *testing.T) {
	x := open(t, t.TempDir())
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := x.Seen("ns/a", t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Seen after Close: %v, want ErrClosed", err)
	}
	if err := x.Record(Entry{"ns/a", t0}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Record after Close: %v, want ErrClosed", err)
	}
	if _, err := x.Expire(t0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Expire after Close: %v, want ErrClosed", err)
	}
	if err := x.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// TestRecordSurvivesAKilledProcess records ids in a child process that
// kills itself with SIGKILL the moment the last Record returns, then
// reopens the index: every id recorded must be there. (With commits that
// only queue the log record, the last ones were lost.)
func TestRecordSurvivesAKilledProcess(t *testing.T) {
	const n = 2000
	if dir := os.Getenv("IDEMPOTENCY_KILL_DIR"); dir != "" {
		x, err := Open(Options{Dir: dir, Window: time.Hour, SyncInterval: time.Hour})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		}
		for i := range n {
			if err := x.Record(Entry{fmt.Sprintf("shop/k%d", i), t0}); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(4)
			}
		}
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRecordSurvivesAKilledProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IDEMPOTENCY_KILL_DIR="+dir)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the child did not die of SIGKILL: %v\n%s", err, out)
	}
	x := open(t, dir)
	defer mustClose(t, x)
	var missing []string
	for i := range n {
		if k := fmt.Sprintf("shop/k%d", i); !seen(t, x, k, t0) {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d ids recorded before the kill are missing after it, e.g. %v", len(missing), n, missing[:min(5, len(missing))])
	}
}
