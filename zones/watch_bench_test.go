package zones

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/sinkd/sinkd/internal/synth"
	"github.com/sinkd/sinkd/sinkhole"
)

// benchWatcher is a Watcher, loaded, on lists files of n domains each.
func benchWatcher(b *testing.B, lists, n int) (*Watcher, string) {
	b.Helper()
	dir := b.TempDir()
	for i := range lists {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("list%02d.txt", i)))
		if err != nil {
			b.Fatal(err)
		}
		if err := synth.WriteList(f, uint64(i+1), n, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
	w, err := NewWatcher(WatchConfig{Dir: dir}, sinkhole.Settings{Action: sinkhole.ActionSinkhole},
		func(*sinkhole.Policy, Reload) {}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Reload(context.Background()); err != nil {
		b.Fatal(err)
	}
	return w, dir
}

// BenchmarkReloadUnchanged is the reload a burst of events on files that
// did not change costs: 20 lists of 50k names, stat only.
func BenchmarkReloadUnchanged(b *testing.B) {
	w, _ := benchWatcher(b, 20, 50_000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		w.sem <- struct{}{}
		_, err := w.reload(ctx, false, nil)
		w.unlock()
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReloadForcedUnchanged is SIGHUP with nothing changed: every
// file hashed, none parsed, the policy rebuilt from the same rules.
func BenchmarkReloadForcedUnchanged(b *testing.B) {
	w, _ := benchWatcher(b, 20, 50_000)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := w.Reload(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReloadOneChanged replaces one of 20 lists of 50k names: one
// parse, 19 reused.
func BenchmarkReloadOneChanged(b *testing.B) {
	w, dir := benchWatcher(b, 20, 50_000)
	ctx := context.Background()
	var bodies [2][]byte
	for i := range bodies {
		f := filepath.Join(b.TempDir(), "x")
		fh, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		if err := synth.WriteList(fh, uint64(100+i), 50_000+i, 0); err != nil {
			b.Fatal(err)
		}
		_ = fh.Close()
		if bodies[i], err = os.ReadFile(f); err != nil {
			b.Fatal(err)
		}
	}
	p := filepath.Join(dir, "list00.txt")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		b.StopTimer()
		if err := os.WriteFile(p, bodies[i%2], 0o640); err != nil {
			b.Fatal(err)
		}
		i++
		b.StartTimer()
		w.sem <- struct{}{}
		r, err := w.reload(ctx, false, nil)
		w.unlock()
		if err != nil || len(r.Changes) != 1 {
			b.Fatalf("reload: %v, %d changes", err, len(r.Changes))
		}
	}
}
