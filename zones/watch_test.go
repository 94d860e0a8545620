package zones

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"

	"github.com/sinkd/sinkd/sinkhole"
)

// testDebounce keeps the watcher tests fast.
const testDebounce = 20 * time.Millisecond

// harness is a Watcher on a temp dir whose apply function keeps the
// latest policy and the reload that built it.
type harness struct {
	t       *testing.T
	dir     string
	w       *Watcher
	reg     *prometheus.Registry
	state   atomic.Pointer[applied]
	kick    chan struct{} // a reload was applied
	applied atomic.Int64  // reloads applied
}

type applied struct {
	p *sinkhole.Policy
	r Reload
}

// newHarness writes files into a new temp dir and builds a Watcher on it.
func newHarness(t *testing.T, files map[string]string, cfg WatchConfig) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), reg: prometheus.NewRegistry(), kick: make(chan struct{}, 1)}
	for name, body := range files {
		writeFile(t, h.dir, name, body)
	}
	cfg.Dir = h.dir
	if cfg.Debounce == 0 {
		cfg.Debounce = testDebounce
	}
	apply := func(p *sinkhole.Policy, r Reload) {
		h.state.Store(&applied{p: p, r: r})
		h.applied.Add(1)
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
	w, err := NewWatcher(cfg, sinkhole.Settings{Action: sinkhole.ActionSinkhole}, apply, h.reg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h.w = w
	return h
}

// policy is the policy in force.
func (h *harness) policy() *sinkhole.Policy {
	if s := h.state.Load(); s != nil {
		return s.p
	}
	return nil
}

// reload forces a full reload.
func (h *harness) reload() Reload {
	h.t.Helper()
	r, err := h.w.Reload(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// start starts the watcher; it is stopped, and must have returned nil,
// when the test ends.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.w.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
}

// run starts the watcher without a Reload before and waits for its first
// reload, which loads the directory.
func (h *harness) run() {
	h.t.Helper()
	h.start()
	h.waitFor("loaded by Run", func(*sinkhole.Policy) bool { return h.applied.Load() > 0 })
}

// runAfterReload loads the directory with Reload, then starts the
// watcher: it has nothing to catch up with.
func (h *harness) runAfterReload() {
	h.t.Helper()
	h.reload()
	h.start()
}

// waitFor waits until cond holds for the policy in force, checking after
// each reload, for at most 10 s. It returns the reload that built that
// policy.
func (h *harness) waitFor(what string, cond func(p *sinkhole.Policy) bool) Reload {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if s := h.state.Load(); s != nil && cond(s.p) {
			return s.r
		}
		select {
		case <-h.kick:
		case <-deadline:
			h.t.Fatalf("after 10 s: not %s (lists %v)", what, listStatuses(h.w.Lists()))
		}
	}
}

// waitBlocked waits until every name is blocked by the list wantList ("":
// until none is blocked).
func (h *harness) waitBlocked(wantList string, names ...string) Reload {
	h.t.Helper()
	what := fmt.Sprintf("%v blocked by %q", names, wantList)
	return h.waitFor(what, func(p *sinkhole.Policy) bool {
		for _, n := range names {
			if blockedBy(p, n) != wantList {
				return false
			}
		}
		return true
	})
}

// blockedBy names the list that blocks name, or "".
func blockedBy(p *sinkhole.Policy, name string) string {
	v := p.Explain(name)
	if !v.Blocks() {
		return ""
	}
	return v.Source.Name
}

func listStatuses(rs []Result) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Source.Name+"="+r.Status)
	}
	return out
}

// listed returns the Result of the list named name.
func (h *harness) listed(name string) Result {
	h.t.Helper()
	for _, r := range h.w.Lists() {
		if r.Source.Name == name {
			return r
		}
	}
	h.t.Fatalf("%s is not listed: %v", name, listStatuses(h.w.Lists()))
	return Result{}
}

// rulesOf returns the compiled rules of the list named name in p.
func rulesOf(p *sinkhole.Policy, name string) *sinkhole.Rules {
	for _, r := range p.Rules() {
		if r.Source().Name == name {
			return r
		}
	}
	return nil
}

// drop writes a list the safe way: a hidden temp file renamed into place.
func drop(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	tmp := filepath.Join(filepath.Dir(p), ".drop-"+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func remove(t *testing.T, p string) {
	t.Helper()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
}

func findChange(cs []Change, list string) (Change, bool) {
	for _, c := range cs {
		if c.List == list {
			return c, true
		}
	}
	return Change{}, false
}

// TestWatcher runs the watcher tests in parallel and checks, once all are
// done, that none left a goroutine behind.
func TestWatcher(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	t.Run("initial reload", testInitialReload)
	t.Run("run without reload loads", testRunLoads)
	t.Run("drop replace delete", testDropReplaceDelete)
	t.Run("keep last good", testKeepLastGood)
	t.Run("failed with nothing to keep", testFailedNew)
	t.Run("ignored files", testIgnoredFiles)
	t.Run("configmap symlink swap", testConfigMapSwap)
	t.Run("new subdirectory", testNewSubdirectory)
	t.Run("coalesce rapid writes", testCoalesce)
	t.Run("max delay bounds continuous writes", testMaxDelay)
	t.Run("unchanged sources reused", testReuse)
	t.Run("same size and mtime rewrite", testSameFingerprint)
	t.Run("missing dir keeps policy", testMissingDir)
	t.Run("metrics", testMetrics)
	t.Run("too large keeps last good", testTooLarge)
	t.Run("not a file keeps last good", testNotAFile)
	t.Run("directory in a file's place", testDirInFilePlace)
	t.Run("dirs removed", testDirsRemoved)
	t.Run("dir renamed away and back", testDirRenamed)
}

func testInitialReload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{
		"malware.txt":      "evil.example\n203.0.113.0/24\n",
		"sub/phish.txt":    "# sinkd: action=nxdomain\nphish.example\n",
		"allow/ok.txt":     "ok.evil.example\n",
		".hidden.txt":      "hidden.example\n",
		"notes.txt~":       "backup.example\n",
		"bad.txt":          "<html>\n",
		"broken/empty.txt": "",
	}, WatchConfig{})
	r := h.reload()
	if !r.Full || r.Result() != ReloadPartial || h.applied.Load() != 1 {
		t.Errorf("reload: full=%v result=%s applied=%d, want full partial 1", r.Full, r.Result(), h.applied.Load())
	}
	got := strings.Join(listStatuses(h.w.Lists()), " ")
	want := "allow/ok.txt=ok bad.txt=failed broken/empty.txt=ok malware.txt=ok sub/phish.txt=ok"
	if got != want {
		t.Errorf("Lists() = %s, want %s", got, want)
	}
	if got := strings.Join(listStatuses(r.Results), " "); got != want {
		t.Errorf("Reload.Results = %s, want %s", got, want)
	}
	if len(r.Changes) != 5 {
		t.Errorf("changes = %+v, want 5 (every list is new)", r.Changes)
	}
	if c, _ := findChange(r.Changes, "malware.txt"); c.OldSHA256 != "" || c.NewSHA256 != sha("evil.example\n203.0.113.0/24\n") || c.Added != 2 || c.Removed != 0 || c.Status != StatusOK {
		t.Errorf("malware.txt change = %+v", c)
	}
	if c, _ := findChange(r.Changes, "bad.txt"); c.Status != StatusFailed || c.NewSHA256 != "" || c.FailedSHA256 != sha("<html>\n") || c.Error == "" {
		t.Errorf("bad.txt change = %+v", c)
	}
	p := h.policy()
	for name, want := range map[string]string{
		"www.evil.example": "malware.txt", "ok.evil.example": "", "login.phish.example": "sub/phish.txt",
		"hidden.example": "", "backup.example": "", "203.0.113.9": "malware.txt",
	} {
		if got := blockedBy(p, name); got != want {
			t.Errorf("%s blocked by %q, want %q", name, got, want)
		}
	}
	// A forced reload with nothing changed still hands over a policy,
	// with no changes.
	r = h.reload()
	if len(r.Changes) != 0 || h.applied.Load() != 2 {
		t.Errorf("second reload: changes %+v, applied %d; want none, 2", r.Changes, h.applied.Load())
	}
}

func testRunLoads(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"a.txt": "a.example\n"}, WatchConfig{})
	h.run()
	h.waitBlocked("a.txt", "a.example")
}

func testDropReplaceDelete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"keep.txt": "keep.example\n"}, WatchConfig{})
	h.runAfterReload()

	drop(t, h.dir, "list.txt", "one.example\ntwo.example\n")
	r := h.waitBlocked("list.txt", "one.example", "two.example")
	c, ok := findChange(r.Changes, "list.txt")
	if !ok || c.Added != 2 || c.Removed != 0 || c.OldSHA256 != "" || c.NewSHA256 != sha("one.example\ntwo.example\n") {
		t.Errorf("drop: change %+v (found %v)", c, ok)
	}

	drop(t, h.dir, "list.txt", "three.example\n*.four.example\n")
	r = h.waitBlocked("list.txt", "three.example", "x.four.example")
	if blockedBy(h.policy(), "one.example") != "" || blockedBy(h.policy(), "two.example") != "" {
		t.Error("the replaced version's names are still blocked")
	}
	c, _ = findChange(r.Changes, "list.txt")
	if c.Added != 1 || c.Removed != 1 || c.OldSHA256 != sha("one.example\ntwo.example\n") || c.NewSHA256 != sha("three.example\n*.four.example\n") {
		t.Errorf("replace: change %+v, want 1 added (wildcard), 1 removed (domain)", c)
	}

	// An in-place rewrite (no rename) is seen too.
	writeFile(t, h.dir, "list.txt", "five.example\n")
	h.waitBlocked("list.txt", "five.example")
	h.waitBlocked("", "three.example", "x.four.example")

	remove(t, filepath.Join(h.dir, "list.txt"))
	r = h.waitBlocked("", "five.example")
	if c, ok := findChange(r.Changes, "list.txt"); !ok || c.Status != StatusDeleted || c.Removed != 1 || c.NewSHA256 != "" {
		t.Errorf("delete: change %+v", c)
	}
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "keep.txt=ok" {
		t.Errorf("Lists() after delete = %s", got)
	}
	if blockedBy(h.policy(), "keep.example") != "keep.txt" {
		t.Error("keep.txt lost its rules")
	}
}

func testKeepLastGood(t *testing.T) {
	t.Parallel()
	good := "good.example\nalso.example\n"
	h := newHarness(t, map[string]string{"list.txt": good}, WatchConfig{})
	h.runAfterReload()
	rules := rulesOf(h.policy(), "list.txt")

	tests := []struct {
		name    string
		content string
		wantWhy string
	}{
		{name: "garbage", content: "<html><body>404</body></html>\nnot a list\n", wantWhy: "no valid rules (2 lines skipped)"},
		{name: "binary", content: "evil.example\n\x00\x01\x02", wantWhy: "list.txt:2: binary file"},
		{name: "bad directive", content: "# sinkd: action=explode\nevil.example\n", wantWhy: `list.txt:1: unknown action "explode"`},
		{name: "random bytes", content: string(junk(mb, false)), wantWhy: "list.txt: no valid rules ("},
		{name: "random bytes with NUL", content: string(junk(mb, true)), wantWhy: ": binary file"},
	}
	for _, tt := range tests {
		drop(t, h.dir, "list.txt", tt.content)
		r := h.waitFor(tt.name+" kept-last-good", func(*sinkhole.Policy) bool {
			r := h.listed("list.txt")
			return r.Status == StatusKeptLastGood && strings.Contains(r.Source.Errors[0], tt.wantWhy)
		})
		l := h.listed("list.txt")
		if l.Rules != rules || l.Source.SHA256 != sha(good) || l.Source.Rules.Domain != 2 {
			t.Errorf("%s: listed rules %p sha %s counts %+v; want the good version's (%p, %s)", tt.name, l.Rules, l.Source.SHA256, l.Source.Rules, rules, sha(good))
		}
		if c, ok := findChange(r.Changes, "list.txt"); !ok || c.Status != StatusKeptLastGood || c.OldSHA256 != sha(good) ||
			c.NewSHA256 != sha(good) || c.FailedSHA256 != sha(tt.content) || c.Added != 0 || c.Removed != 0 {
			t.Errorf("%s: change %+v", tt.name, c)
		}
		p := h.policy()
		if blockedBy(p, "good.example") != "list.txt" || blockedBy(p, "evil.example") != "" {
			t.Errorf("%s: the good version is not the one in force", tt.name)
		}
	}
	// Back to the good bytes: ok again, with the same compiled rules.
	drop(t, h.dir, "list.txt", good)
	h.waitFor("ok again", func(*sinkhole.Policy) bool { return h.listed("list.txt").Status == StatusOK })
	if rulesOf(h.policy(), "list.txt") != rules {
		t.Error("restoring the good version re-parsed it")
	}

	// An unreadable file is kept too (root reads it anyway).
	if os.Getuid() == 0 {
		return
	}
	p := filepath.Join(h.dir, "list.txt")
	writeFile(t, h.dir, "list.txt", "other.example\n")
	h.waitBlocked("list.txt", "other.example")
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	h.waitFor("unreadable kept-last-good", func(*sinkhole.Policy) bool {
		r := h.listed("list.txt")
		return r.Status == StatusKeptLastGood && strings.Contains(r.Source.Errors[0], "cannot read")
	})
	if blockedBy(h.policy(), "other.example") != "list.txt" {
		t.Error("an unreadable file dropped the rules in force")
	}
}

func testFailedNew(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, WatchConfig{})
	h.runAfterReload()
	drop(t, h.dir, "bad.txt", "<html>\n")
	drop(t, h.dir, "good.txt", "good.example\n")
	h.waitBlocked("good.txt", "good.example")
	r := h.listed("bad.txt")
	if r.Status != StatusFailed || r.Rules != nil || r.Source.SHA256 != sha("<html>\n") {
		t.Errorf("bad.txt: %s rules %v sha %s, want failed, none, its own hash", r.Status, r.Rules, r.Source.SHA256)
	}
}

func testIgnoredFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, WatchConfig{})
	h.runAfterReload()
	for _, name := range []string{".x.tmp", "x.swp", "x.tmp", "x.part", "x~", "x.dpkg-new", "#x#", ".hidden/x.txt"} {
		writeFile(t, h.dir, name, strings.NewReplacer(".", "-", "#", "h", "~", "t", "/", "-").Replace(name)+".ignored.example\n")
	}
	// Events are processed in order: once a real file dropped after the
	// temp files is live, the temp files have been looked at.
	drop(t, h.dir, "real.txt", "real.example\n")
	h.waitBlocked("real.txt", "real.example")
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "real.txt=ok" {
		t.Errorf("Lists() = %s, want only real.txt", got)
	}
	p := h.policy()
	for _, r := range p.Rules() {
		if r.Source().Name != "real.txt" {
			t.Errorf("policy holds %s", r.Source().Name)
		}
	}
}

// testConfigMapSwap lays out a directory the way a Kubernetes ConfigMap
// volume does and swaps its data atomically.
func testConfigMapSwap(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"..2026_01/list.txt": "first.example\n"}, WatchConfig{})
	symlink(t, "..2026_01", filepath.Join(h.dir, "..data"))
	symlink(t, "..data/list.txt", filepath.Join(h.dir, "list.txt"))
	h.runAfterReload()
	if blockedBy(h.policy(), "first.example") != "list.txt" {
		t.Fatalf("ConfigMap list not loaded: %v", listStatuses(h.w.Lists()))
	}

	writeFile(t, h.dir, "..2026_02/list.txt", "second.example\n")
	symlink(t, "..2026_02", filepath.Join(h.dir, "..data_tmp"))
	if err := os.Rename(filepath.Join(h.dir, "..data_tmp"), filepath.Join(h.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(h.dir, "..2026_01")); err != nil {
		t.Fatal(err)
	}
	r := h.waitBlocked("list.txt", "second.example")
	if blockedBy(h.policy(), "first.example") != "" {
		t.Error("the old ConfigMap version is still in force")
	}
	if c, ok := findChange(r.Changes, "list.txt"); !ok || c.OldSHA256 != sha("first.example\n") || c.NewSHA256 != sha("second.example\n") {
		t.Errorf("change %+v", c)
	}
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "list.txt=ok" {
		t.Errorf("Lists() = %s", got)
	}
}

func testNewSubdirectory(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, WatchConfig{})
	h.runAfterReload()
	// mkdir, then a file at once: it may be created before the watch on
	// the new directory exists, and must be found by listing it.
	writeFile(t, h.dir, "sub/early.txt", "early.example\n")
	h.waitBlocked("sub/early.txt", "early.example")
	// Now the directory is watched: later files raise their own events.
	writeFile(t, h.dir, "sub/x.txt", "x.example\n")
	h.waitBlocked("sub/x.txt", "x.example")
	writeFile(t, h.dir, "sub/deeper/y.txt", "y.example\n")
	h.waitBlocked("sub/deeper/y.txt", "y.example")
	// A directory removed takes its lists with it.
	if err := os.RemoveAll(filepath.Join(h.dir, "sub")); err != nil {
		t.Fatal(err)
	}
	h.waitBlocked("", "early.example", "x.example", "y.example")
}

func testCoalesce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"list.txt": "n0.example\n"}, WatchConfig{Debounce: 100 * time.Millisecond, MaxDelay: 2 * time.Second})
	h.run()
	for i := 1; i <= 100; i++ {
		writeFile(t, h.dir, "list.txt", fmt.Sprintf("n%d.example\n", i))
	}
	h.waitBlocked("list.txt", "n100.example")
	if n := h.applied.Load() - 1; n > 10 {
		t.Errorf("100 writes gave %d reloads, want at most 10", n)
	}
}

func testMaxDelay(t *testing.T) {
	t.Parallel()
	// With a quiet period this long and writes that never pause, only the
	// bound can start a reload while the writes go on.
	h := newHarness(t, nil, WatchConfig{Debounce: time.Hour, MaxDelay: 100 * time.Millisecond})
	h.run()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; rulesOf(h.policy(), "list.txt") == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatal("no reload within 10 s of continuous writes, with MaxDelay 100ms")
		}
		writeFile(t, h.dir, "list.txt", fmt.Sprintf("n%d.example\n", i))
	}
}

func testReuse(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"a.txt": "a.example\n", "b.txt": "b.example\n"}, WatchConfig{})
	h.runAfterReload()
	a0, b0 := rulesOf(h.policy(), "a.txt"), rulesOf(h.policy(), "b.txt")
	drop(t, h.dir, "c.txt", "c.example\n")
	h.waitBlocked("c.txt", "c.example")
	p := h.policy()
	if rulesOf(p, "a.txt") != a0 || rulesOf(p, "b.txt") != b0 {
		t.Error("adding c.txt rebuilt a.txt or b.txt")
	}
	// The same bytes written again (new inode, new mtime): hashed, not
	// re-parsed.
	drop(t, h.dir, "a.txt", "a.example\n")
	r := h.reload()
	if len(r.Changes) != 0 {
		t.Errorf("rewriting identical bytes: changes %+v", r.Changes)
	}
	p = h.policy()
	if rulesOf(p, "a.txt") != a0 || rulesOf(p, "b.txt") != b0 {
		t.Error("a forced reload re-parsed unchanged files")
	}
}

// testSameFingerprint rewrites a file in place with bytes of the same
// length and puts its modification time back: only hashing can tell.
func testSameFingerprint(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"list.txt": "aaaa.example\n"}, WatchConfig{})
	h.reload()
	p := filepath.Join(h.dir, "list.txt")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	rewrite := func(content string) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString(content); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	// Without the watcher: a forced reload re-hashes every file.
	rewrite("bbbb.example\n")
	h.reload()
	if blockedBy(h.policy(), "bbbb.example") != "list.txt" {
		t.Error("forced reload missed a same-size, same-mtime rewrite")
	}
	// With it: the event marks the file, so it is hashed. (A file
	// dropped first, once live, shows the directory is watched.)
	h.start()
	drop(t, h.dir, "sentinel.txt", "sentinel.example\n")
	h.waitBlocked("sentinel.txt", "sentinel.example")
	rewrite("cccc.example\n")
	h.waitBlocked("list.txt", "cccc.example")
}

func testMissingDir(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"a.txt": "a.example\n"}, WatchConfig{})
	h.reload()
	if err := os.RemoveAll(h.dir); err != nil {
		t.Fatal(err)
	}
	if _, err := h.w.Reload(context.Background()); err == nil {
		t.Error("Reload of a missing dir: no error")
	}
	if h.applied.Load() != 1 || blockedBy(h.policy(), "a.example") != "a.txt" {
		t.Error("a failed reload replaced the policy")
	}
	if got := testutil.ToFloat64(h.w.m.reloads.WithLabelValues(ReloadFailed)); got != 1 {
		t.Errorf(`sinkd_reloads_total{result="failed"} = %v, want 1`, got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.w.Reload(ctx); err == nil {
		t.Error("Reload with a done context: no error")
	}
}

func testMetrics(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{
		"a.txt":        "a.example\n*.w.example\n192.0.2.1\n198.51.100.0/24\nnot a name\n",
		"b.txt":        "b.example\n",
		"allow/ok.txt": "ok.example\n",
		"bad.txt":      "<html>\n",
	}, WatchConfig{})
	h.reload()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP sinkd_policy_rules Rules in force, by list and kind (domain, wildcard, ip, cidr, allow).
# TYPE sinkd_policy_rules gauge
sinkd_policy_rules{kind="allow",list="a.txt"} 0
sinkd_policy_rules{kind="allow",list="allow/ok.txt"} 1
sinkd_policy_rules{kind="allow",list="b.txt"} 0
sinkd_policy_rules{kind="allow",list="bad.txt"} 0
sinkd_policy_rules{kind="cidr",list="a.txt"} 1
sinkd_policy_rules{kind="cidr",list="allow/ok.txt"} 0
sinkd_policy_rules{kind="cidr",list="b.txt"} 0
sinkd_policy_rules{kind="cidr",list="bad.txt"} 0
sinkd_policy_rules{kind="domain",list="a.txt"} 1
sinkd_policy_rules{kind="domain",list="allow/ok.txt"} 0
sinkd_policy_rules{kind="domain",list="b.txt"} 1
sinkd_policy_rules{kind="domain",list="bad.txt"} 0
sinkd_policy_rules{kind="ip",list="a.txt"} 1
sinkd_policy_rules{kind="ip",list="allow/ok.txt"} 0
sinkd_policy_rules{kind="ip",list="b.txt"} 0
sinkd_policy_rules{kind="ip",list="bad.txt"} 0
sinkd_policy_rules{kind="wildcard",list="a.txt"} 1
sinkd_policy_rules{kind="wildcard",list="allow/ok.txt"} 0
sinkd_policy_rules{kind="wildcard",list="b.txt"} 0
sinkd_policy_rules{kind="wildcard",list="bad.txt"} 0
# HELP sinkd_list_skipped_lines Lines skipped as invalid or unsupported in the listed version of each list.
# TYPE sinkd_list_skipped_lines gauge
sinkd_list_skipped_lines{list="a.txt"} 1
sinkd_list_skipped_lines{list="allow/ok.txt"} 0
sinkd_list_skipped_lines{list="b.txt"} 0
sinkd_list_skipped_lines{list="bad.txt"} 1
# HELP sinkd_reloads_total Policy reloads by result: ok, partial (a list failed or is kept-last-good), failed (zones.dir unreadable).
# TYPE sinkd_reloads_total counter
sinkd_reloads_total{result="failed"} 0
sinkd_reloads_total{result="ok"} 0
sinkd_reloads_total{result="partial"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "sinkd_policy_rules", "sinkd_list_skipped_lines", "sinkd_reloads_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h.w.m.duration); n != 1 {
		t.Errorf("sinkd_reload_duration_seconds: %d series", n)
	}

	// Deleting lists deletes their series; all ok now.
	remove(t, filepath.Join(h.dir, "a.txt"))
	remove(t, filepath.Join(h.dir, "bad.txt"))
	h.reload()
	want = `
# HELP sinkd_list_skipped_lines Lines skipped as invalid or unsupported in the listed version of each list.
# TYPE sinkd_list_skipped_lines gauge
sinkd_list_skipped_lines{list="allow/ok.txt"} 0
sinkd_list_skipped_lines{list="b.txt"} 0
# HELP sinkd_reloads_total Policy reloads by result: ok, partial (a list failed or is kept-last-good), failed (zones.dir unreadable).
# TYPE sinkd_reloads_total counter
sinkd_reloads_total{result="failed"} 0
sinkd_reloads_total{result="ok"} 1
sinkd_reloads_total{result="partial"} 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "sinkd_list_skipped_lines", "sinkd_reloads_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h.w.m.rules); n != 10 {
		t.Errorf("sinkd_policy_rules: %d series after deleting two of four lists, want 10", n)
	}
}

func TestWatchConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		cfg          WatchConfig
		wantErr      bool
		wantDebounce time.Duration
		wantMaxDelay time.Duration
	}{
		{name: "defaults", cfg: WatchConfig{Dir: "d"}, wantDebounce: DefaultDebounce, wantMaxDelay: DefaultMaxDelay},
		{name: "long debounce raises the bound", cfg: WatchConfig{Dir: "d", Debounce: 5 * time.Second}, wantDebounce: 5 * time.Second, wantMaxDelay: 5 * time.Second},
		{name: "explicit", cfg: WatchConfig{Dir: "d", Debounce: time.Millisecond, MaxDelay: time.Second}, wantDebounce: time.Millisecond, wantMaxDelay: time.Second},
		{name: "no dir", cfg: WatchConfig{}, wantErr: true},
		{name: "negative", cfg: WatchConfig{Dir: "d", Debounce: -1}, wantErr: true},
		{name: "negative max file size", cfg: WatchConfig{Dir: "d", MaxFileSize: -1}, wantErr: true},
		{name: "bound below debounce", cfg: WatchConfig{Dir: "d", Debounce: time.Second, MaxDelay: time.Millisecond}, wantDebounce: time.Second, wantMaxDelay: time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := tt.cfg
			err := c.Validate()
			if (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && (c.Debounce != tt.wantDebounce || c.MaxDelay != tt.wantMaxDelay) {
				t.Errorf("debounce %v max %v, want %v %v", c.Debounce, c.MaxDelay, tt.wantDebounce, tt.wantMaxDelay)
			}
			if err == nil && c.MaxFileSize != DefaultMaxFileSize {
				t.Errorf("max file size %d, want the default %d", c.MaxFileSize, DefaultMaxFileSize)
			}
		})
	}
}

// waitDirErr waits, polling for at most 10 s, until DirErr is set (want)
// or clear: no reload is applied when it is set, so there is no kick to
// wait for.
func (h *harness) waitDirErr(want bool) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for (h.w.DirErr() != nil) != want {
		if time.Now().After(deadline) {
			h.t.Fatalf("after 10 s: DirErr() = %v, want set: %v", h.w.DirErr(), want)
		}
		<-tick.C
	}
}

// waitListed waits until the list named name is listed with status and
// its first error is wantErr ("": none).
func (h *harness) waitListed(name, status, wantErr string) Result {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("%s %s %q", name, status, wantErr), func(*sinkhole.Policy) bool {
		for _, r := range h.w.Lists() {
			if r.Source.Name == name {
				return r.Status == status && (wantErr == "" && len(r.Source.Errors) == 0 ||
					len(r.Source.Errors) > 0 && r.Source.Errors[0] == wantErr)
			}
		}
		return false
	})
	return h.listed(name)
}

// place puts a new entry made by mk at dir/name the safe way: made under a
// hidden name, renamed into place.
func place(t *testing.T, dir, name string, mk func(tmp string)) {
	t.Helper()
	tmp := filepath.Join(dir, ".place-"+name)
	mk(tmp)
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// testTooLarge grows a good list to a sparse 1 GiB in place: it fails
// unread and its good version stays in force.
func testTooLarge(t *testing.T) {
	t.Parallel()
	good := "good.example\n"
	h := newHarness(t, map[string]string{"list.txt": good}, WatchConfig{})
	h.runAfterReload()
	rules := rulesOf(h.policy(), "list.txt")
	p := filepath.Join(h.dir, "list.txt")
	if err := os.Truncate(p, 1<<30); err != nil {
		t.Fatal(err)
	}
	const why = "list.txt: file too large (1073741824 > zones.max_file_size 268435456)"
	r := h.waitListed("list.txt", StatusKeptLastGood, why)
	if r.Rules != rules || r.Source.SHA256 != sha(good) || blockedBy(h.policy(), "good.example") != "list.txt" {
		t.Error("the good version is not the one in force")
	}
	if c, ok := findChange(h.state.Load().r.Changes, "list.txt"); !ok || c.Status != StatusKeptLastGood ||
		c.NewSHA256 != sha(good) || c.FailedSHA256 != "" || c.Error != why {
		t.Errorf("change %+v", c)
	}
	// A forced reload does not read it either.
	if r := h.reload(); r.Result() != ReloadPartial || h.listed("list.txt").Status != StatusKeptLastGood {
		t.Errorf("forced reload: %s, %v", r.Result(), listStatuses(r.Results))
	}
	// A new list that is too large has nothing to keep.
	place(t, h.dir, "big.txt", func(tmp string) { sparse(t, tmp, 1<<30) })
	h.waitListed("big.txt", StatusFailed, "big.txt: file too large (1073741824 > zones.max_file_size 268435456)")
	// Back under the bound: ok again.
	writeFile(t, h.dir, "list.txt", "smaller.example\n")
	h.waitBlocked("list.txt", "smaller.example")
}

// testNotAFile puts what is not a list file in a good list's place: a
// dangling symlink, a symlink to a directory, a named pipe nobody writes
// to. Each keeps the good version, says why, and hangs nothing.
func testNotAFile(t *testing.T) {
	t.Parallel()
	good := "good.example\n"
	h := newHarness(t, map[string]string{"list.txt": good, "other/x.txt": "x.example\n"}, WatchConfig{})
	h.runAfterReload()
	rules := rulesOf(h.policy(), "list.txt")
	nowhere := filepath.Join(h.dir, "nowhere")
	tests := []struct {
		name    string
		mk      func(tmp string) bool // false: not here
		wantErr string
	}{
		{
			name:    "dangling symlink",
			mk:      func(tmp string) bool { symlink(t, nowhere, tmp); return true },
			wantErr: "list.txt: cannot read: dangling symlink to " + nowhere,
		},
		{
			name:    "symlink to a directory",
			mk:      func(tmp string) bool { symlink(t, "other", tmp); return true },
			wantErr: "list.txt: is a directory (symlinked directories are not descended)",
		},
		{
			name:    "named pipe",
			mk:      func(tmp string) bool { return mkfifo(t, tmp) },
			wantErr: "list.txt: not a regular file (named pipe)",
		},
	}
	for i, tt := range tests {
		ok := true
		place(t, h.dir, "list.txt", func(tmp string) { ok = tt.mk(tmp) })
		if !ok {
			continue
		}
		r := h.waitListed("list.txt", StatusKeptLastGood, tt.wantErr)
		if r.Rules != rules || blockedBy(h.policy(), "good.example") != "list.txt" {
			t.Errorf("%s: the good version is not the one in force", tt.name)
		}
		// The watcher goes on: a list dropped now loads.
		name := fmt.Sprintf("after%d.txt", i)
		drop(t, h.dir, name, fmt.Sprintf("after%d.example\n", i))
		h.waitBlocked(name, fmt.Sprintf("after%d.example", i))
		if r := h.reload(); h.listed("list.txt").Status != StatusKeptLastGood {
			t.Errorf("%s: forced reload: %v", tt.name, listStatuses(r.Results))
		}
	}
	drop(t, h.dir, "list.txt", good)
	h.waitListed("list.txt", StatusOK, "")
	if rulesOf(h.policy(), "list.txt") != rules {
		t.Error("restoring the good version re-parsed it")
	}
}

// testDirInFilePlace replaces a list by a directory of the same name: a
// directory is just a directory, so the list is deleted and the lists in
// the directory load.
func testDirInFilePlace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"list.txt": "old.example\n"}, WatchConfig{})
	h.runAfterReload()
	remove(t, filepath.Join(h.dir, "list.txt"))
	writeFile(t, h.dir, "list.txt/inner.txt", "inner.example\n")
	h.waitBlocked("list.txt/inner.txt", "inner.example")
	h.waitBlocked("", "old.example")
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "list.txt/inner.txt=ok" {
		t.Errorf("Lists() = %s", got)
	}
}

// testDirsRemoved removes a subdirectory (its lists leave: a deliberate
// delete), then zones.dir itself, rm -rf: the policy stays until the
// directory is back, which is noticed without a SIGHUP.
func testDirsRemoved(t *testing.T) {
	t.Parallel()
	// rm -rf removes the files before the directory: a quiet period
	// longer than that keeps the reload from seeing an empty directory.
	h := newHarness(t, map[string]string{
		"a.txt": "a.example\n", "sub/s.txt": "s.example\n", "sub/deeper/d.txt": "d.example\n",
	}, WatchConfig{Debounce: 250 * time.Millisecond})
	h.w.dirPoll = 10 * time.Millisecond
	h.runAfterReload()

	if err := os.RemoveAll(filepath.Join(h.dir, "sub")); err != nil {
		t.Fatal(err)
	}
	r := h.waitBlocked("", "s.example", "d.example")
	for _, l := range []string{"sub/s.txt", "sub/deeper/d.txt"} {
		if c, ok := findChange(r.Changes, l); !ok || c.Status != StatusDeleted || c.Removed != 1 {
			t.Errorf("%s: change %+v", l, c)
		}
	}
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "a.txt=ok" || blockedBy(h.policy(), "a.example") != "a.txt" {
		t.Errorf("after removing sub: Lists() = %s", got)
	}

	applied := h.applied.Load()
	if err := os.RemoveAll(h.dir); err != nil {
		t.Fatal(err)
	}
	h.waitDirErr(true)
	if err := h.w.DirErr(); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), h.dir) {
		t.Errorf("DirErr() = %v, want one naming %s, not found", err, h.dir)
	}
	if h.applied.Load() != applied || blockedBy(h.policy(), "a.example") != "a.txt" {
		t.Error("removing zones.dir replaced the policy")
	}
	if got := strings.Join(listStatuses(h.w.Lists()), " "); got != "a.txt=ok" {
		t.Errorf("Lists() with zones.dir gone = %s", got)
	}
	if got := testutil.ToFloat64(h.w.m.dirReadable); got != 0 {
		t.Errorf("sinkd_zones_dir_readable = %v, want 0", got)
	}
	if got := testutil.ToFloat64(h.w.m.reloads.WithLabelValues(ReloadFailed)); got < 1 {
		t.Errorf(`sinkd_reloads_total{result="failed"} = %v, want at least 1`, got)
	}

	// Back, with other lists.
	writeFile(t, h.dir, "b.txt", "b.example\n")
	h.waitBlocked("b.txt", "b.example")
	h.waitBlocked("", "a.example")
	if err := h.w.DirErr(); err != nil {
		t.Errorf("DirErr() = %v once zones.dir is back", err)
	}
	if got := testutil.ToFloat64(h.w.m.dirReadable); got != 1 {
		t.Errorf("sinkd_zones_dir_readable = %v, want 1", got)
	}
	// And watched again: a change raises an event.
	drop(t, h.dir, "c.txt", "c.example\n")
	h.waitBlocked("c.txt", "c.example")
}

// testDirRenamed renames zones.dir away, changes a list there, and
// renames it back: the policy stays meanwhile, and the change is seen
// once it is back.
func testDirRenamed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, map[string]string{"a.txt": "a.example\n", "sub/s.txt": "s.example\n"}, WatchConfig{})
	h.w.dirPoll = 10 * time.Millisecond
	h.runAfterReload()
	applied := h.applied.Load()
	away := h.dir + ".away"
	if err := os.Rename(h.dir, away); err != nil {
		t.Fatal(err)
	}
	h.waitDirErr(true)
	writeFile(t, away, "a.txt", "a2.example\n")
	writeFile(t, away, "sub/s.txt", "s2.example\n")
	if h.applied.Load() != applied || blockedBy(h.policy(), "a.example") != "a.txt" || blockedBy(h.policy(), "s.example") != "sub/s.txt" {
		t.Error("renaming zones.dir away replaced the policy")
	}
	if err := os.Rename(away, h.dir); err != nil {
		t.Fatal(err)
	}
	h.waitBlocked("a.txt", "a2.example")
	h.waitBlocked("sub/s.txt", "s2.example")
	h.waitDirErr(false)
	drop(t, h.dir, "sub/t.txt", "t.example\n")
	h.waitBlocked("sub/t.txt", "t.example")
}
