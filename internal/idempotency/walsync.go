package idempotency

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// walCategory is the write category Pebble creates its write-ahead log
// files with.
const walCategory vfs.DiskWriteCategory = "pebble-wal"

// intervalSyncFS makes Pebble's write-ahead log as durable as the event
// store's own writes with --store-sync set to an interval: a commit with
// pebble.Sync returns once its log record was written to the operating
// system (so a killed process loses nothing it committed), and the log is
// flushed to the disk every interval (so a machine crash can lose the last
// interval, as it can of JetStream's file store), not at every commit.
//
// It does so by turning the log files' syncs into no-ops and syncing them
// itself on a ticker. Every other file (tables, manifests, directories) is
// synced as Pebble asks.
type intervalSyncFS struct {
	vfs.FS

	mu   sync.Mutex
	logs map[*intervalSyncFile]struct{}
}

func newIntervalSyncFS(fs vfs.FS) *intervalSyncFS {
	return &intervalSyncFS{FS: fs, logs: map[*intervalSyncFile]struct{}{}}
}

func (fs *intervalSyncFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return fs.track(f), nil
}

func (fs *intervalSyncFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, category)
	if err != nil || category != walCategory {
		return f, err
	}
	return fs.track(f), nil
}

func (fs *intervalSyncFS) track(f vfs.File) *intervalSyncFile {
	w := &intervalSyncFile{File: f, fs: fs}
	fs.mu.Lock()
	fs.logs[w] = struct{}{}
	fs.mu.Unlock()
	return w
}

// syncLogs flushes every open log file to the disk; it returns the first
// error.
func (fs *intervalSyncFS) syncLogs() error {
	fs.mu.Lock()
	files := make([]*intervalSyncFile, 0, len(fs.logs))
	for f := range fs.logs {
		files = append(files, f)
	}
	fs.mu.Unlock()
	var first error
	for _, f := range files {
		if err := f.File.Sync(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// run syncs the logs every interval until stop is closed, reporting errors
// to onErr.
func (fs *intervalSyncFS) run(stop <-chan struct{}, interval time.Duration, onErr func(error)) {
	every(stop, interval, fs.syncLogs, onErr)
}

// intervalSyncFile is a write-ahead log file whose syncs wait for the
// ticker: Pebble has written the data to the file (the operating system)
// before it asks for a sync.
type intervalSyncFile struct {
	vfs.File
	fs *intervalSyncFS
}

func (f *intervalSyncFile) Sync() error     { return nil }
func (f *intervalSyncFile) SyncData() error { return nil }

// SyncTo reports a full sync: Pebble then relies on the data being
// written, which it is, to the operating system.
func (f *intervalSyncFile) SyncTo(int64) (bool, error) { return true, nil }

// Close flushes the file to the disk (a log is closed when Pebble moves to
// the next one, rarely) and stops tracking it.
func (f *intervalSyncFile) Close() error {
	f.fs.mu.Lock()
	delete(f.fs.logs, f)
	f.fs.mu.Unlock()
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	return err
}
