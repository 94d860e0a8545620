package zones

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/sinkd/sinkd/sinkhole"
)

// Watch defaults.
const (
	// DefaultDebounce is the quiet period after the last file event before
	// a reload (zones.debounce).
	DefaultDebounce = 200 * time.Millisecond
	// DefaultMaxDelay bounds how long events may keep postponing a reload:
	// a file rewritten without pause is still reloaded this often.
	DefaultMaxDelay = 2 * time.Second
	// dirPoll is how often Run looks for zones.dir while it cannot be
	// read (removed, renamed away): its watch is gone with it, so no event
	// says it is back.
	dirPoll = time.Second
)

// Change statuses beyond the Result statuses.
const (
	// StatusDeleted is the status of a Change whose file is gone: its
	// rules left the policy.
	StatusDeleted = "deleted"
)

// Reload results, the values of sinkd_reloads_total's result label.
const (
	ReloadOK      = "ok"      // the policy was rebuilt and every list is ok
	ReloadPartial = "partial" // the policy was rebuilt; some list failed or is kept-last-good
	ReloadFailed  = "failed"  // zones.dir could not be read: the previous policy stays
)

// WatchConfig configures a Watcher.
type WatchConfig struct {
	// Dir is zones.dir, the drop directory. It must exist when a reload
	// runs.
	Dir string
	// Debounce is the quiet period: a reload starts once no event has
	// arrived for this long. Zero means DefaultDebounce.
	Debounce time.Duration
	// MaxDelay bounds the wait from the first event of a burst to its
	// reload, so a file rewritten continuously still reloads. Zero means
	// max(DefaultMaxDelay, Debounce). Shorter than Debounce, it turns the
	// quiet period into a fixed delay after the first event.
	MaxDelay time.Duration
	// MaxFileSize is zones.max_file_size: a larger list fails unread (and
	// keeps its last good version). Zero means DefaultMaxFileSize.
	MaxFileSize int64
}

// Validate checks c and fills in defaults.
func (c *WatchConfig) Validate() error {
	if c.Dir == "" {
		return errors.New("zones: watch: no directory")
	}
	if c.Debounce < 0 || c.MaxDelay < 0 {
		return errors.New("zones: watch: negative debounce")
	}
	if c.MaxFileSize < 0 {
		return errors.New("zones: watch: negative max file size")
	}
	if c.MaxFileSize == 0 {
		c.MaxFileSize = DefaultMaxFileSize
	}
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.MaxDelay == 0 {
		c.MaxDelay = max(DefaultMaxDelay, c.Debounce)
	}
	return nil
}

// Change is one list whose file changed in a reload: new, replaced,
// failed, recovered or deleted. It is what the log line of the reload and
// the evidence log's reload record (changed[{list,old_sha256,new_sha256,
// added,removed}]) say about it.
//
// Added and Removed compare the rule counts of the versions in force
// before and after, kind by kind (domain, wildcard, ip, cidr, allow): a
// kind that grew by n adds n, one that shrank by n removes n. They are not
// a set difference: a version that swaps one name for another counts 0
// added, 0 removed.
type Change struct {
	List      string `json:"list"`
	OldSHA256 string `json:"old_sha256"` // version in force before; "" when none
	NewSHA256 string `json:"new_sha256"` // version in force after; "" when none (deleted, failed)
	Added     int    `json:"added"`
	Removed   int    `json:"removed"`
	// Status is the list's status after the reload (StatusOK,
	// StatusFailed, StatusKeptLastGood) or StatusDeleted.
	Status string `json:"status"`
	// FailedSHA256 is the SHA-256 of a version that failed to load (""
	// otherwise, or when it could not be read).
	FailedSHA256 string        `json:"failed_sha256,omitempty"`
	Error        string        `json:"error,omitempty"` // why it failed
	Skipped      int           `json:"skipped"`         // lines skipped in the version read
	Took         time.Duration `json:"-"`               // parse + compile time of the version read
}

// Reload is the outcome of one reload that rebuilt the policy.
type Reload struct {
	Full    bool          // forced (start-up, SIGHUP, POST /api/v1/reload): every file re-hashed
	Results []Result      // every list, sorted by name, as Lists returns them
	Changes []Change      // the lists that changed, sorted by name
	Took    time.Duration // scan, hash, parse and compile, until the policy was handed over
}

// Result is ReloadOK when every list is ok, ReloadPartial otherwise.
func (r Reload) Result() string {
	for _, x := range r.Results {
		if x.Status != StatusOK {
			return ReloadPartial
		}
	}
	return ReloadOK
}

// Watcher keeps the lists of zones.dir compiled into a live Policy. It
// watches the directory tree with fsnotify, waits for a burst of events to
// settle (WatchConfig.Debounce, at most MaxDelay), then rebuilds the
// policy from the files that changed and hands it to apply. Reload forces a
// full reload (SIGHUP, POST /api/v1/reload); reloads never overlap.
//
// Which files are lists is LoadDir's rule: hidden entries and editor or
// package-manager leftovers are ignored, visible symlinks to files are
// followed, symlinked directories are not descended. A new directory is
// watched, then listed, so files created before its watch are not missed.
// An event on a hidden entry re-checks the visible symlinks beside it, so
// a Kubernetes ConfigMap volume (list.txt -> ..data/list.txt, ..data ->
// ..2026_01_01) reloads when ..data is swapped.
//
// Change detection: every reload stats every list (following symlinks). A
// file whose size, modification time, inode and device are unchanged and
// that had no event is not read. Any other file of the same size as the
// version last read (or as the version in force) is hashed (SHA-256); if
// the hash equals that version's, it is not parsed and its compiled rules
// (the same *sinkhole.Rules) are reused. A file of another size differs:
// it is parsed, and hashed while parsed. A forced reload does the same
// for every file, whatever its fingerprint.
//
// Keep-last-good: a version that cannot be read or fails (binary, a bad
// directive, lines but no valid rule) leaves the previous good version's
// rules in force; the list is listed kept-last-good, with the previous
// version's hash and counts and the new version's errors. With no good
// version to keep, it is listed failed. A file larger than
// WatchConfig.MaxFileSize fails the same way, unread. A deleted file's
// rules go away, and so do those of a subdirectory removed.
//
// If zones.dir itself cannot be read (removed, renamed away, replaced by
// a file), the reload fails and the policy in force stays: the lists are
// not emptied. DirErr says why, sinkd_zones_dir_readable is 0 and one
// error is logged. Run then looks for the directory every second; once it
// is back, it is watched again and, after the quiet period, every file is
// re-checked, without a SIGHUP.
//
// After a reload that changed rules, the Watcher runs a garbage
// collection, so the heap falls back to the new policy's live size rather
// than holding the reload's peak until the pacer's next cycle.
//
// Each reload that changes something logs one line per changed list
// (name, status, rules added and removed, skipped lines, SHA-256 old ->
// new, parse time) and one summary line.
type Watcher struct {
	cfg      WatchConfig
	root     string // cfg.Dir, with a trailing separator when it is a symlink
	settings sinkhole.Settings
	apply    func(*sinkhole.Policy, Reload)
	log      *slog.Logger
	m        watchMetrics

	sem     chan struct{}         // held by the reload running; guards the fields below
	files   map[string]*fileState // by list name
	fsw     *fsnotify.Watcher     // set while Run runs
	watchOK map[string]bool       // directories whose watch failed, so the warning is logged once
	buf     []byte                // hashFile's read buffer

	lists   atomic.Pointer[[]Result]
	dirErr  atomic.Pointer[error] // why zones.dir could not be read at the last try; nil: it could
	dirPoll time.Duration         // how often Run looks for zones.dir while dirErr is set
}

// fileState is what the Watcher knows about one list.
type fileState struct {
	fp       fingerprint
	last     Result // the version last read: ok or failed
	good     Result // the version in force (last when ok); Rules nil when none
	goodSize int64  // the size of good's file
	res      Result // as listed: ok, failed or kept-last-good
}

func newFileState(fp fingerprint, last, good Result, goodSize int64) *fileState {
	s := &fileState{fp: fp, last: last, good: good, goodSize: goodSize, res: last}
	if last.Err != nil && good.Rules != nil {
		src := *good.Source
		src.Errors = last.Source.Errors
		s.res = Result{Source: &src, Rules: good.Rules, Status: StatusKeptLastGood, Err: last.Err, Took: last.Took}
	}
	return s
}

// fingerprint identifies a version of a file without reading it.
type fingerprint struct {
	ok       bool // stat succeeded
	size     int64
	mtime    int64 // UnixNano
	dev, ino uint64
	mode     fs.FileMode
}

func fingerprintOf(fi fs.FileInfo) fingerprint {
	dev, ino := fileID(fi)
	return fingerprint{ok: true, size: fi.Size(), mtime: fi.ModTime().UnixNano(), dev: dev, ino: ino, mode: fi.Mode()}
}

// NewWatcher returns a Watcher of cfg.Dir. apply receives each new policy
// with the reload that built it; it is called by one goroutine at a time,
// in order, and must not call back into the Watcher. The metrics are
// registered on reg (nil: not registered). NewWatcher starts nothing: call
// Reload for the first policy, and Run to follow the directory.
func NewWatcher(cfg WatchConfig, settings sinkhole.Settings, apply func(*sinkhole.Policy, Reload), reg prometheus.Registerer, log *slog.Logger) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if apply == nil {
		return nil, errors.New("zones: watch: no apply function")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	root := walkRoot(cfg.Dir) // watch and walk the directory a symlinked dir points to
	return &Watcher{
		cfg:      cfg,
		root:     root,
		settings: settings,
		apply:    apply,
		log:      log,
		m:        newWatchMetrics(reg),
		sem:      make(chan struct{}, 1),
		files:    map[string]*fileState{},
		watchOK:  map[string]bool{},
		dirPoll:  dirPoll,
	}, nil
}

// DirErr returns why zones.dir could not be read at the last reload (or
// the last look for it), or nil if it could. While it is set, the policy
// in force is the last one built.
func (w *Watcher) DirErr() error {
	if p := w.dirErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Lists returns every list as the last reload left it, sorted by name.
// It does not wait for a reload in progress.
func (w *Watcher) Lists() []Result {
	if p := w.lists.Load(); p != nil {
		return slices.Clone(*p)
	}
	return nil
}

// Reload re-reads zones.dir now: every file is hashed, changed ones are
// parsed, and the policy is rebuilt and handed to apply, even when nothing
// changed. It waits for a reload in progress. It fails only when zones.dir
// cannot be read or ctx ends first; the previous policy then stays.
func (w *Watcher) Reload(ctx context.Context) (Reload, error) {
	if err := w.lock(ctx); err != nil {
		return Reload{}, fmt.Errorf("zones: reload: %w", err)
	}
	defer w.unlock()
	return w.reload(ctx, true, nil)
}

func (w *Watcher) lock(ctx context.Context) error {
	select {
	case w.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Watcher) unlock() { <-w.sem }

// Run follows zones.dir until ctx is done, reloading after each burst of
// events. It first catches up with changes made since the last Reload (or
// loads everything, if there was none). It returns nil when ctx is done,
// and an error only if the directory cannot be watched at all (the
// inotify limits); Reload still works then.
func (w *Watcher) Run(ctx context.Context) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("zones: watch %s: %w", w.cfg.Dir, err)
	}
	if err := w.lock(ctx); err != nil {
		_ = fsw.Close()
		return nil
	}
	w.fsw = fsw
	w.unlock()
	defer func() {
		w.sem <- struct{}{}
		w.fsw = nil
		w.unlock()
		_ = fsw.Close()
	}()

	// The first reload, at once, watches every directory (the scan adds
	// the watches) and catches up with changes since the last Reload.
	pend := newDirty()
	timer := time.NewTimer(0)
	defer timer.Stop()
	poll := time.NewTicker(w.dirPoll)
	defer poll.Stop()
	var first time.Time // first event of the pending burst; zero: none pending
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return nil
			}
			if !w.note(ev, pend) {
				continue
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return nil
			}
			// Events may have been lost (ErrEventOverflow): look at
			// every file, hashing those that changed.
			w.log.Warn("zones: watch", "dir", w.cfg.Dir, "err", err)
			pend.all = true
		case <-poll.C:
			// zones.dir could not be read: its watch went with it. Once
			// it is back, watch it and treat that as an event on it: a
			// reload of every file once the quiet period has passed (the
			// directory may be being filled).
			if w.dirErr.Load() == nil || pend.all || checkDir(w.cfg.Dir) != nil {
				continue
			}
			if err := w.lock(ctx); err != nil {
				return nil
			}
			w.watch(w.root)
			w.unlock()
			w.log.Info("zones.dir is back: reloading", "dir", w.cfg.Dir)
			pend.all = true
		case <-timer.C:
			first = time.Time{}
			d := pend
			pend = newDirty()
			if err := w.lock(ctx); err != nil {
				return nil
			}
			// A failure is zones.dir that cannot be read (reload logged
			// it, once) or ctx done.
			_, _ = w.reload(ctx, false, d)
			w.unlock()
			continue
		}
		// An event to act on: wait for the quiet period, but no longer
		// than MaxDelay since the first event of the burst.
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		timer.Reset(max(0, min(w.cfg.Debounce, first.Add(w.cfg.MaxDelay).Sub(now))))
	}
}

// dirty is what the events of a burst touched.
type dirty struct {
	all   bool            // hash every file whatever its fingerprint
	names map[string]bool // list names with an event
	dirs  map[string]bool // directories with an event on a hidden entry: re-check their symlinks
}

func newDirty() *dirty { return &dirty{names: map[string]bool{}, dirs: map[string]bool{}} }

func (d *dirty) has(e *entry) bool {
	return d != nil && (d.all || d.names[e.name] || e.symlink && d.dirs[path.Dir(e.name)])
}

// note records ev in d and reports whether it calls for a reload.
func (w *Watcher) note(ev fsnotify.Event, d *dirty) bool {
	rel, err := filepath.Rel(w.root, ev.Name)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		d.all = true // the directory itself (or something unexpected)
		return true
	}
	name := filepath.ToSlash(rel)
	if !ignored(name) {
		d.names[name] = true
		return true
	}
	// A hidden entry in a visible directory (ConfigMap ..data swaps, or
	// the temp file of a safe drop): the visible symlinks beside it may
	// now point elsewhere.
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if strings.HasPrefix(base, ".") && (dir == "." || !ignored(dir)) {
		d.dirs[dir] = true
		return true
	}
	return false
}

// entry is one list file found by a scan.
type entry struct {
	name, path string
	fp         fingerprint
	symlink    bool
	regular    bool
	err        *FileError // an unreadable directory
}

// scan lists the list files below the root, watching every directory
// before it is listed. Its rules are LoadDir's.
func (w *Watcher) scan() ([]entry, error) {
	if err := checkDir(w.cfg.Dir); err != nil {
		return nil, fmt.Errorf("zones: reload %s: %w", w.cfg.Dir, err)
	}
	var out []entry
	err := walkLists(w.root, listVisitor{
		dir: w.watch, // before WalkDir lists it
		file: func(name, p string, d fs.DirEntry, fi fs.FileInfo) {
			e := entry{name: name, path: p, symlink: d.Type()&fs.ModeSymlink != 0}
			if fi != nil {
				e.fp, e.regular = fingerprintOf(fi), fi.Mode().IsRegular()
			}
			out = append(out, e)
		},
		bad: func(name, p string, ferr *FileError) { out = append(out, entry{name: name, path: p, err: ferr}) },
	})
	if err != nil {
		return nil, fmt.Errorf("zones: reload %s: %w", w.cfg.Dir, err)
	}
	return out, nil
}

// watch adds an fsnotify watch on dir (again: adding is idempotent, and
// a directory moved away loses its watch). Without Run, it does nothing.
func (w *Watcher) watch(dir string) {
	if w.fsw == nil {
		return
	}
	if err := w.fsw.Add(dir); err != nil {
		if !w.watchOK[dir] {
			w.watchOK[dir] = true
			w.log.Warn("zones: cannot watch directory: its changes need SIGHUP", "dir", dir, "err", err)
		}
		return
	}
	delete(w.watchOK, dir)
}

// reload rebuilds the policy from the files that changed and hands it to
// apply: always when full, otherwise only when something changed (else
// it returns the zero Reload). The caller holds the lock.
func (w *Watcher) reload(ctx context.Context, full bool, d *dirty) (Reload, error) {
	start := time.Now()
	entries, err := w.scan()
	if err != nil {
		w.m.reloads.WithLabelValues(ReloadFailed).Inc()
		w.setDirErr(err)
		return Reload{}, err
	}
	w.setDirErr(nil)
	next := make(map[string]*fileState, len(entries))
	var changes []Change
	for i := range entries {
		if err := ctx.Err(); err != nil {
			return Reload{}, fmt.Errorf("zones: reload: %w", err)
		}
		e := &entries[i]
		old := w.files[e.name]
		cur := w.check(e, old, full || d.has(e))
		next[e.name] = cur
		if c, ok := diff(e.name, old, cur); ok {
			changes = append(changes, c)
		}
	}
	for name, old := range w.files {
		if _, ok := next[name]; !ok {
			c, _ := diff(name, old, nil)
			changes = append(changes, c)
		}
	}
	w.files = next
	if !full && len(changes) == 0 && w.lists.Load() != nil {
		return Reload{}, nil
	}

	results := make([]Result, 0, len(next))
	for _, s := range next {
		results = append(results, s.res)
	}
	slices.SortFunc(results, func(a, b Result) int { return strings.Compare(a.Source.Name, b.Source.Name) })
	slices.SortFunc(changes, func(a, b Change) int { return strings.Compare(a.List, b.List) })
	p := Compile(w.settings, results)
	r := Reload{Full: full, Results: results, Changes: changes, Took: time.Since(start)}
	w.lists.Store(&results) // before apply: once a policy is in force, Lists describes it
	w.apply(p, r)
	w.record(r)
	if len(changes) > 0 {
		// The replaced rules are garbage now (once the queries in flight
		// finish). Without a collection, the heap goal the pacer set while
		// both versions and the parser's buffers were live would let the
		// heap stay near that peak until the next cycle; the next reload
		// would then start from there. One cycle per changed reload keeps
		// the heap at the new live size, and the freed pages go back to the
		// OS (RSS follows the live size, not the reload's peak).
		debug.FreeOSMemory()
	}
	return r, nil
}

// setDirErr records whether zones.dir could be read (err nil) and logs
// when that changes. The caller holds the lock.
func (w *Watcher) setDirErr(err error) {
	was := w.dirErr.Load()
	switch {
	case err == nil && was != nil:
		w.log.Info("zones.dir can be read again", "dir", w.cfg.Dir)
	case err != nil && was == nil:
		w.log.Error("zones.dir cannot be read: the policy in force stays; watching for it to come back",
			"dir", w.cfg.Dir, "err", err)
	}
	if err == nil {
		w.dirErr.Store(nil)
		w.m.dirReadable.Set(1)
		return
	}
	w.dirErr.Store(&err)
	w.m.dirReadable.Set(0)
}

// check decides what a list's state is now. force: read the file even if
// its fingerprint is unchanged.
func (w *Watcher) check(e *entry, old *fileState, force bool) *fileState {
	if old != nil && !force && old.fp == e.fp {
		return old
	}
	if e.err != nil {
		return newFileState(e.fp, failedResult(e.path, e.name, e.err), Result{}, 0)
	}
	if old == nil {
		res := ParseFile(e.path, e.name, w.settings.Action, w.cfg.MaxFileSize)
		if res.Err != nil {
			return newFileState(e.fp, res, Result{}, 0)
		}
		return newFileState(e.fp, res, res, e.fp.size)
	}
	// Hash first when the content may be one already parsed (same size as
	// the last version read, or as the one in force): parsing costs far
	// more than hashing. A file of another size is parsed at once (and
	// hashed while it is parsed); one too large fails unread.
	good, goodSize := old.good, old.goodSize
	if e.regular && e.fp.size <= w.cfg.MaxFileSize &&
		(e.fp.size == old.fp.size || good.Rules != nil && e.fp.size == goodSize) {
		if sum, err := w.hashFile(e.path); err == nil {
			switch {
			case sum == old.last.Source.SHA256:
				// The same bytes as last time: nothing to parse.
				s := *old
				s.fp = e.fp
				return &s
			case good.Rules != nil && sum == good.Source.SHA256:
				// Back to the version in force.
				return newFileState(e.fp, good, good, goodSize)
			}
		}
	}
	res := ParseFile(e.path, e.name, w.settings.Action, w.cfg.MaxFileSize)
	if res.Err == nil {
		good, goodSize = res, e.fp.size
	}
	return newFileState(e.fp, res, good, goodSize)
}

// hashFile returns the hex SHA-256 of the list file at p, which must be a
// regular file of at most MaxFileSize bytes (as ParseFile reads it). The
// caller holds the lock (the buffer is the Watcher's).
func (w *Watcher) hashFile(p string) (string, error) {
	f, _, err := openList(p, w.cfg.MaxFileSize)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if w.buf == nil {
		w.buf = make([]byte, 64<<10)
	}
	h := sha256.New()
	if _, err := io.CopyBuffer(h, &capReader{r: f, left: w.cfg.MaxFileSize, max: w.cfg.MaxFileSize}, w.buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// diff describes how a list changed from old to cur (nil: none, or
// deleted); ok is false when nothing a user would see changed.
func diff(name string, old, cur *fileState) (Change, bool) {
	c := Change{List: name, Status: StatusDeleted}
	var before, after sinkhole.RuleCounts
	if old != nil && old.good.Rules != nil {
		c.OldSHA256, before = old.good.Source.SHA256, old.good.Source.Rules
	}
	if cur != nil {
		c.Status = cur.res.Status
		if cur.good.Rules != nil {
			c.NewSHA256, after = cur.good.Source.SHA256, cur.good.Source.Rules
		}
		c.Skipped, c.Took = cur.last.Source.Skipped, cur.last.Took
		if cur.last.Err != nil {
			c.FailedSHA256, c.Error = cur.last.Source.SHA256, cur.last.Err.Error()
		}
	}
	c.Added, c.Removed = countDiff(before, after)
	same := old != nil && cur != nil &&
		(old.last.Source == cur.last.Source ||
			old.last.Source.SHA256 == cur.last.Source.SHA256 && old.res.Status == cur.res.Status &&
				old.good.Rules == cur.good.Rules && errString(old.last.Err) == errString(cur.last.Err))
	return c, !same
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// countDiff sums, kind by kind, how much the counts grew and shrank.
func countDiff(before, after sinkhole.RuleCounts) (added, removed int) {
	b, a := kindCounts(before), kindCounts(after)
	for i := range b {
		if d := a[i] - b[i]; d > 0 {
			added += d
		} else {
			removed -= d
		}
	}
	return added, removed
}

// kinds are the values of sinkd_policy_rules' kind label, in kindCounts'
// order.
var kinds = [...]string{"domain", "wildcard", "ip", "cidr", "allow"}

func kindCounts(c sinkhole.RuleCounts) [len(kinds)]int {
	return [...]int{c.Domain, c.Wildcard, c.IP, c.CIDR, c.Allow}
}

// record logs r and updates the metrics.
func (w *Watcher) record(r Reload) {
	for _, c := range r.Changes {
		args := []any{"list", c.List, "status", c.Status, "added", c.Added, "removed", c.Removed,
			"skipped", c.Skipped, "sha256", orDash(c.OldSHA256) + " -> " + orDash(c.NewSHA256),
			"took", c.Took.Round(time.Microsecond)}
		switch c.Status {
		case StatusOK, StatusDeleted:
			w.log.Info("list reloaded", args...)
		default:
			args = append(args, "failed_sha256", orDash(c.FailedSHA256), "err", c.Error)
			w.log.Warn("list failed", args...)
		}
		if c.Status == StatusDeleted {
			w.m.rules.DeletePartialMatch(prometheus.Labels{"list": c.List})
			w.m.skipped.DeleteLabelValues(c.List)
		}
	}
	var rules, failed int
	for _, x := range r.Results {
		n := kindCounts(x.Source.Rules)
		if x.Rules == nil {
			n = [len(kinds)]int{}
		}
		for i, k := range kinds {
			w.m.rules.WithLabelValues(x.Source.Name, k).Set(float64(n[i]))
			rules += n[i]
		}
		w.m.skipped.WithLabelValues(x.Source.Name).Set(float64(x.Source.Skipped))
		if x.Status != StatusOK {
			failed++
		}
	}
	res := r.Result()
	w.m.reloads.WithLabelValues(res).Inc()
	w.m.duration.Observe(r.Took.Seconds())
	w.log.Info("lists reloaded", "dir", w.cfg.Dir, "full", r.Full, "result", res, "lists", len(r.Results),
		"changed", len(r.Changes), "failed", failed, "rules", rules, "took", r.Took.Round(time.Microsecond))
}

// watchMetrics are the Watcher's Prometheus metrics.
type watchMetrics struct {
	rules       *prometheus.GaugeVec
	skipped     *prometheus.GaugeVec
	reloads     *prometheus.CounterVec
	duration    prometheus.Histogram
	dirReadable prometheus.Gauge
}

func newWatchMetrics(reg prometheus.Registerer) watchMetrics {
	f := promauto.With(reg)
	m := watchMetrics{
		rules: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_policy_rules",
			Help: "Rules in force, by list and kind (domain, wildcard, ip, cidr, allow).",
		}, []string{"list", "kind"}),
		skipped: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sinkd_list_skipped_lines",
			Help: "Lines skipped as invalid or unsupported in the listed version of each list.",
		}, []string{"list"}),
		reloads: f.NewCounterVec(prometheus.CounterOpts{
			Name: "sinkd_reloads_total",
			Help: "Policy reloads by result: ok, partial (a list failed or is kept-last-good), failed (zones.dir unreadable).",
		}, []string{"result"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "sinkd_reload_duration_seconds",
			Help:    "Time to scan zones.dir, parse the changed lists and build the policy.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9), // 1 ms to 65 s
		}),
		dirReadable: f.NewGauge(prometheus.GaugeOpts{
			Name: "sinkd_zones_dir_readable",
			Help: "1 if zones.dir could be read at the last reload; 0 while it cannot (removed, renamed away): the policy in force stays.",
		}),
	}
	for _, r := range []string{ReloadOK, ReloadPartial, ReloadFailed} {
		m.reloads.WithLabelValues(r)
	}
	return m
}
