package sinkhole

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// evShortFile writes only the first half of what it is given while fail
// is set, returning err (nil: a short count alone), and fails Truncate
// while failTrunc is set: a disk that fills up in the middle of a batch.
type evShortFile struct {
	*os.File
	fail, failTrunc *atomic.Bool
	err             error
}

func (f *evShortFile) Write(p []byte) (int, error) {
	if f.fail.Load() {
		n, err := f.File.Write(p[:len(p)/2])
		if err != nil {
			return n, err
		}
		return n, f.err
	}
	return f.File.Write(p)
}

func (f *evShortFile) Truncate(size int64) error {
	if f.failTrunc.Load() {
		return &os.PathError{Op: "truncate", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Truncate(size)
}

// TestEvidenceShortWrite fails a write half-way through a batch of hits
// and checks that the log verifies afterwards, whatever comes next: the
// disk recovers (the same day, or the next, when the segment rotates), or
// sinkd stops while it still fails and starts again.
func TestEvidenceShortWrite(t *testing.T) {
	t.Parallel()
	const lost = 5
	tests := []struct {
		name      string
		err       error // with the short write
		truncFail bool  // the cut after the failed write fails too
		then      string
		wantTypes []string
		wantSegs  int
	}{
		{name: "short count, no error; recovers", then: "recover",
			wantTypes: []string{"start", "hit", "gap", "hit", "stop"}, wantSegs: 1},
		{name: "ENOSPC, cut fails; recovers", err: syscall.ENOSPC, truncFail: true, then: "recover",
			wantTypes: []string{"start", "hit", "gap", "hit", "stop"}, wantSegs: 1},
		{name: "ENOSPC, cut fails; recovers the next day", err: syscall.ENOSPC, truncFail: true, then: "next day",
			wantTypes: []string{"start", "hit", "gap", "hit", "stop"}, wantSegs: 2},
		{name: "ENOSPC, cut fails; stops failing and restarts", err: syscall.ENOSPC, truncFail: true, then: "restart"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newEvClock(evT0())
			cfg := evTestConfig(t, clock)
			var fail, failTrunc atomic.Bool
			cfg.openFile = func(name string, flag int, perm os.FileMode) (evFile, error) {
				f, err := os.OpenFile(name, flag, perm)
				if err != nil {
					return nil, err
				}
				return &evShortFile{File: f, fail: &fail, failTrunc: &failTrunc, err: tt.err}, nil
			}
			l, _ := evOpenLog(t, cfg)
			if err := l.RecordStart(nil); err != nil {
				t.Fatal(err)
			}
			l.RecordHit(evTestHit(t, evT0(), "192.168.1.1", "before.evil.example"))
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			fail.Store(true)
			failTrunc.Store(tt.truncFail)
			var names []string
			for i := range lost {
				names = append(names, fmt.Sprintf("d%d.evil.example", i))
				l.RecordHit(evTestHit(t, evT0().Add(time.Duration(i+1)*time.Second), "192.168.1.1", names[i]))
			}
			if err := l.Sync(); err == nil { // one batch: half of it reaches the file
				t.Fatal("Sync on a failing disk: no error")
			}

			if tt.then == "restart" {
				if err := l.Close("terminated"); err == nil {
					t.Error("Close on a failing disk: no error")
				}
				fail.Store(false)
				failTrunc.Store(false)
				clock.Add(time.Minute)
				l2, _ := evOpenLog(t, cfg)
				if err := l2.Close("done"); err != nil {
					t.Fatal(err)
				}
				if got := testutil.ToFloat64(l2.m.lost.WithLabelValues("torn")); got != 1 {
					t.Errorf("lost{torn} = %v, want 1", got)
				}
				// The whole lines of the failed batch stay (their chain is
				// sound), the half line is cut and recorded as a torn gap.
				recs := evRecords(t, cfg.Dir)
				n := len(recs)
				if n < 4 || recs[0]["type"] != "start" || recs[1]["qname"] != "before.evil.example" ||
					recs[n-2]["type"] != "gap" || recs[n-2]["reason"] != "torn" || recs[n-2]["lost"] != 1.0 ||
					recs[n-1]["type"] != "stop" {
					t.Fatalf("records after the restart: %v", recs)
				}
				for _, r := range recs[2 : n-2] {
					if r["type"] != "hit" || !slices.Contains(names, r["qname"].(string)) {
						t.Errorf("record kept from the failed batch: %v", r)
					}
				}
				evCheckChain(t, cfg.Dir, n, 1)
				return
			}

			if tt.then == "next day" {
				clock.Set(evT0().Truncate(24 * time.Hour).Add(24*time.Hour + time.Second))
			}
			fail.Store(false)
			failTrunc.Store(false)
			clock.Add(2 * evRetryInterval)
			deadline := time.Now().Add(10 * time.Second)
			for l.Sync() != nil {
				if time.Now().After(deadline) {
					t.Fatal("the log does not recover after the disk does")
				}
				time.Sleep(5 * time.Millisecond)
			}
			l.RecordHit(evTestHit(t, clock.Now(), "192.168.1.1", "after.evil.example"))
			if err := l.Close("done"); err != nil {
				t.Fatal(err)
			}
			recs := evRecords(t, cfg.Dir)
			var types []string
			for _, r := range recs {
				types = append(types, r["type"].(string))
			}
			if !slices.Equal(types, tt.wantTypes) {
				t.Fatalf("records %v, want %v", types, tt.wantTypes)
			}
			if g := recs[2]; g["lost"] != float64(lost) || g["reason"] != "disk" {
				t.Errorf("gap = %v, want %d hits lost to the disk", g, lost)
			}
			evCheckChain(t, cfg.Dir, len(tt.wantTypes), tt.wantSegs)
		})
	}
}

// evCheckChain verifies dir and checks its records' seq are 1..n.
func evCheckChain(t *testing.T, dir string, n, segs int) {
	t.Helper()
	res, err := Verify(context.Background(), dir, nil)
	if err != nil || res.Records != int64(n) || res.Segments != segs || res.Incomplete {
		t.Errorf("Verify = %+v, %v; want %d records in %d segments", res, err, n, segs)
	}
	for i, r := range evRecords(t, dir) {
		if r["seq"] != float64(i+1) {
			t.Errorf("record %d: seq %v", i+1, r["seq"])
		}
	}
}
