package sinkhole

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// evFile is an open segment; *os.File is one. Tests inject failing ones.
type evFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

const (
	// evFlushSize is how much encoded data the writer collects before one
	// write(2) while the queue keeps it busy. Encoded records are what a
	// kill -9 loses beyond the queue: 64 KiB is 100 to 150 hits, and
	// writes of this size cost no throughput measurably compared to 256 KiB
	// (BenchmarkEvidenceWriter).
	evFlushSize = 64 << 10
	// evRetryInterval is how long after a failed write the next is tried
	// (hits meanwhile are counted as lost to the disk).
	evRetryInterval = time.Second
)

// errEvDisk answers control records that could not be written: they are
// written after the gap record once the disk works again.
var errEvDisk = errors.New("sinkhole: evidence: write failed; record kept for retry")

// evWriter is the state of the writer goroutine: the chain, the segment
// being written, and what failed writes lost.
type evWriter struct {
	cfg  *LogConfig
	m    *evMetrics
	log  *slog.Logger
	open func(name string, flag int, perm os.FileMode) (evFile, error)
	enc  evEncoder
	corr *evCorr // the correlation window, fed by hit

	chain  *evChain // pending: includes the records in buf
	cseq   uint64   // committed: the last record written to the file
	cprev  [64]byte
	buf    []byte
	bufCtl []*evRecord // control records in buf
	bufN   [evKinds]int
	bufHit evLoss // hits in buf
	wait   []*evRecord

	// The segment being written. f is nil before its first flush.
	f         evFile
	segName   string        // "" until a segment has begun (in buf or f)
	segDay    int64         // the UTC day it began
	fileSize  int64         // bytes of whole records in f
	needTrunc bool          // a failed write left bytes past fileSize
	dirty     bool          // written since the last fsync
	syncing   chan struct{} // closed when the running syncAsync is done

	broken   bool
	retryAt  time.Time
	diskLost evLoss
	retry    []*evRecord

	onClosed   func(path string) // a closed segment is ready for gzip
	stopReason string
	closeErr   error
}

// evLoss counts lost hits and their time range.
type evLoss struct {
	n           int64
	from, until time.Time
}

func (l *evLoss) add(t time.Time) {
	if l.n == 0 || t.Before(l.from) {
		l.from = t
	}
	if l.n == 0 || t.After(l.until) {
		l.until = t
	}
	l.n++
}

func (l *evLoss) merge(o evLoss) {
	if o.n == 0 {
		return
	}
	if l.n == 0 || o.from.Before(l.from) {
		l.from = o.from
	}
	if l.n == 0 || o.until.After(l.until) {
		l.until = o.until
	}
	l.n += o.n
}

// newEvWriter recovers the chain from the directory. It returns a gap
// record when a torn last line was cut.
func newEvWriter(cfg *LogConfig, m *evMetrics, log *slog.Logger) (*evWriter, *evRecord, error) {
	w := &evWriter{cfg: cfg, m: m, log: log, open: cfg.openFile, chain: newEvChain(cfg.HMACKey), corr: newEvCorr(cfg.CorrelationWindow),
		buf: make([]byte, 0, evFlushSize+64<<10)}
	if w.open == nil {
		w.open = func(name string, flag int, perm os.FileMode) (evFile, error) { return os.OpenFile(name, flag, perm) }
	}
	w.enc = evEncoder{instance: cfg.Instance, chain: evChainName(cfg.HMACKey), version: cfg.Version,
		ident: newEvIdent(cfg.Neighbours, cfg.DHCPLeases, cfg.Now, log)}
	torn, err := w.recover()
	if err != nil {
		return nil, nil, err
	}
	w.cseq, w.cprev = w.chain.seq, w.chain.prev
	return w, torn, nil
}

// recover finds the last whole record, cutting a torn tail off the newest
// segment, and reopens that segment for appending when it may grow.
func (w *evWriter) recover() (*evRecord, error) {
	dir := w.cfg.Dir
	segs, stale, err := evListSegments(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range stale {
		_ = os.Remove(p)
	}
	evRemoveTemps(dir)
	var torn *evRecord
	for len(segs) > 0 {
		s := segs[len(segs)-1]
		if s.gz {
			info, err := evScanLast(s)
			if err != nil {
				return nil, fmt.Errorf("sinkhole: evidence: resume: %w", err)
			}
			w.resume(info)
			return torn, nil
		}
		t, cut, err := evCutTorn(s.path)
		if err != nil {
			return nil, fmt.Errorf("sinkhole: evidence: resume: %w", err)
		}
		if cut > 0 {
			w.log.Warn("evidence: cut a torn last line (crash?)", "segment", s.name, "bytes", cut)
			from := time.Time{}
			if info, ok := evInfoOf(t.last); ok {
				from = info.lastTS
			}
			now := w.cfg.Now()
			if from.IsZero() {
				from = now
			}
			torn = &evRecord{kind: evGap, ts: now, lost: 1, reason: "torn", from: from, until: now}
		}
		if t.last == nil { // nothing whole left: drop the empty segment
			if err := os.Remove(s.path); err != nil {
				return nil, fmt.Errorf("sinkhole: evidence: %w", err)
			}
			segs = segs[:len(segs)-1]
			continue
		}
		info, ok := evInfoOf(t.last)
		if !ok {
			return nil, fmt.Errorf("sinkhole: evidence: resume: %s: last line is not a record", s.path)
		}
		w.resume(info)
		w.reopen(s, t.end, info)
		return torn, nil
	}
	return torn, nil
}

func (w *evWriter) resume(info evSegInfo) {
	w.chain.seq = info.lastSeq
	copy(w.chain.prev[:], info.lastHash)
}

// reopen continues an uncompressed segment if it is still today's and has
// room; otherwise it is left for the gzip worker.
func (w *evWriter) reopen(s evSeg, size int64, last evSegInfo) {
	now := w.cfg.Now()
	if evDay(s.start) != evDay(now) || size >= w.cfg.SegmentSize || evDay(last.lastTS) != evDay(now) {
		return
	}
	f, err := w.open(s.path, os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return // a new segment will start
	}
	w.f, w.segName, w.segDay, w.fileSize = f, s.name, evDay(s.start), size
}

// evCutTorn truncates an uncompressed segment after its last whole line
// (and drops trailing lines that are not records, such as the zeros a
// crash can leave). It returns the tail and how many bytes were cut.
func evCutTorn(path string) (evTail, int64, error) {
	var cut int64
	for {
		t, err := evReadTail(path)
		if err != nil {
			return t, cut, err
		}
		end := t.end
		if t.last != nil {
			if _, err := evParseLine(t.last); err != nil {
				end = t.lastOff
			}
		}
		if end == t.size {
			return t, cut, nil
		}
		if err := os.Truncate(path, end); err != nil {
			return t, cut, err
		}
		cut += t.size - end
	}
}

// evRemoveTemps removes hidden temporary files a crash left behind.
func evRemoveTemps(dir string) {
	m, _ := filepath.Glob(filepath.Join(dir, ".hits-*.tmp"))
	for _, p := range m {
		_ = os.Remove(p)
	}
}

// evDay is the UTC day of t.
func evDay(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s < 0 && s%86400 != 0 {
		d--
	}
	return d
}

// closedSegments lists the uncompressed segments the writer does not
// append to: they are for the gzip worker.
func (w *evWriter) closedSegments() []string {
	segs, _, err := evListSegments(w.cfg.Dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range segs {
		if !s.gz && s.name != w.segName {
			out = append(out, s.path)
		}
	}
	return out
}

// hit encodes one hit, or counts it lost while the disk fails.
func (w *evWriter) hit(h *Hit) {
	if h.Time.IsZero() {
		h.Time = w.cfg.Now()
	}
	if !w.encodeLossy(&evRecord{kind: evHit, ts: h.Time, hit: h}) {
		return
	}
	var list string
	if h.List != nil {
		list = h.List.Name
	}
	w.corr.add(evClientAddr(h.Client), evCorrHit{ts: h.Time, seq: w.chain.seq, qname: evName(h.QName), list: list})
}

// encodeLossy encodes a hit or contact record, or counts it lost while
// the disk fails. It reports whether r was encoded.
func (w *evWriter) encodeLossy(r *evRecord) bool {
	if !w.broken {
		w.rotate(r.ts)
	}
	if w.broken {
		w.diskLost.add(r.ts)
		w.m.lost.WithLabelValues("disk").Inc()
		return false
	}
	w.encode(r)
	w.bufHit.add(r.ts)
	return true
}

// put encodes a control record (or queues it for retry while the disk
// fails).
func (w *evWriter) put(r *evRecord) {
	if r.kind == evSync {
		w.wait = append(w.wait, r)
		return
	}
	if !w.broken {
		w.rotate(r.ts)
	}
	if w.broken {
		w.failCtl(r, errEvDisk)
		return
	}
	w.encode(r)
	w.bufCtl = append(w.bufCtl, r)
}

// failCtl keeps a control record for retry (prune records are dropped:
// their segment stays) and tells its caller.
func (w *evWriter) failCtl(r *evRecord, err error) {
	if r.kind != evPrune {
		w.retry = append(w.retry, r)
	}
	if r.done != nil {
		r.done <- err
		r.done = nil
	}
}

func (w *evWriter) encode(r *evRecord) {
	if w.segName == "" {
		w.segName, w.segDay = evSegName(r.ts, w.chain.seq+1), evDay(r.ts)
	}
	w.buf = w.enc.appendRecord(w.buf, w.chain, r)
	w.bufN[r.kind]++
}

// rotate closes the current segment when the next record, at ts, belongs
// in a new one: the segment is full, or ts is on another UTC day.
func (w *evWriter) rotate(ts time.Time) {
	if w.segName == "" {
		return
	}
	if w.fileSize+int64(len(w.buf)) < w.cfg.SegmentSize && evDay(ts) <= w.segDay {
		return
	}
	if !w.flush() {
		return
	}
	w.closeSegment(true)
}

// flush writes buf to the segment, creating it if needed. On failure the
// chain goes back to the last record written, buffered hits are lost and
// control records kept for retry.
func (w *evWriter) flush() bool {
	// With nothing buffered there may still be the tail of a failed write
	// to cut (once the disk is retried): a segment is never closed with it.
	if len(w.buf) == 0 && (!w.needTrunc || w.broken) {
		return !w.broken
	}
	if err := w.write(); err != nil {
		w.fail(err)
		return false
	}
	w.fileSize += int64(len(w.buf))
	w.cseq, w.cprev = w.chain.seq, w.chain.prev
	w.m.bytes.Add(float64(len(w.buf)))
	for k, n := range w.bufN {
		if n > 0 {
			w.m.records[k].Add(float64(n))
		}
	}
	w.wait = append(w.wait, w.bufCtl...)
	w.resetBuf()
	w.dirty = true
	return true
}

func (w *evWriter) write() error {
	if w.f == nil {
		path := filepath.Join(w.cfg.Dir, w.segName)
		f, err := w.open(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		w.f, w.fileSize = f, 0
		if err := evSyncDir(w.cfg.Dir); err != nil {
			w.log.Warn("evidence: sync directory", "err", err)
		}
	}
	if w.needTrunc {
		if err := w.f.Truncate(w.fileSize); err != nil {
			return fmt.Errorf("truncate after a failed write: %w", err)
		}
		w.needTrunc = false
	}
	if len(w.buf) == 0 {
		return nil
	}
	n, err := w.f.Write(w.buf)
	if err == nil && n < len(w.buf) {
		err = fmt.Errorf("short write (%d of %d bytes)", n, len(w.buf))
	}
	if err != nil {
		if n > 0 {
			w.needTrunc = true
			if w.f.Truncate(w.fileSize) == nil {
				w.needTrunc = false
			}
		}
		return err
	}
	return nil
}

func (w *evWriter) fail(err error) {
	w.m.writeErrors.Inc()
	if !w.broken {
		w.log.Error("evidence: write failed: hits are counted as lost until writing works again", "err", err)
	}
	w.broken = true
	w.retryAt = w.cfg.Now().Add(evRetryInterval)
	w.diskLost.merge(w.bufHit)
	w.m.lost.WithLabelValues("disk").Add(float64(w.bufHit.n))
	ctl := w.bufCtl
	w.bufCtl = nil
	for _, r := range ctl {
		w.failCtl(r, errEvDisk)
	}
	w.chain.seq, w.chain.prev = w.cseq, w.cprev
	w.resetBuf()
	if w.f != nil && w.fileSize == 0 && !w.needTrunc {
		// A segment that got nothing: remove it, the next one starts anew.
		_ = w.f.Close()
		_ = os.Remove(filepath.Join(w.cfg.Dir, w.segName))
		w.f = nil
	}
	if w.f == nil {
		w.segName = ""
	}
}

func (w *evWriter) resetBuf() {
	w.buf = w.buf[:0]
	w.bufCtl = w.bufCtl[:0]
	w.bufN = [evKinds]int{}
	w.bufHit = evLoss{}
}

// sync makes written records durable, now.
func (w *evWriter) sync() {
	w.waitSync()
	if w.f != nil && w.dirty {
		w.dirty = false
		w.fsync(w.f)
	}
}

func (w *evWriter) fsync(f evFile) {
	start := time.Now()
	err := f.Sync()
	w.m.fsync.Observe(time.Since(start).Seconds())
	if err != nil {
		w.m.writeErrors.Inc()
		w.log.Error("evidence: fsync", "err", err)
	}
}

// syncAsync starts the periodic fsync in its own goroutine, so that a
// slow disk does not stall the writer (which may go on writing to the
// file meanwhile). At most one runs; the writer waits for it before it
// closes the file (waitSync).
func (w *evWriter) syncAsync() {
	if w.syncing != nil {
		select {
		case <-w.syncing:
			w.syncing = nil
		default:
			return // the last one is still running
		}
	}
	if w.f == nil || !w.dirty {
		return
	}
	w.dirty = false
	done, f := make(chan struct{}), w.f
	w.syncing = done
	go func() {
		defer close(done)
		w.fsync(f)
	}()
}

// waitSync waits for a running syncAsync.
func (w *evWriter) waitSync() {
	if w.syncing != nil {
		<-w.syncing
		w.syncing = nil
	}
}

// answer tells waiting callers their records are durable (a sync request
// while the disk fails gets an error).
func (w *evWriter) answer() {
	for _, r := range w.wait {
		if r.done != nil {
			var err error
			if r.kind == evSync && w.broken {
				err = errEvDisk
			}
			r.done <- err
			r.done = nil
		}
	}
	w.wait = w.wait[:0]
}

// tick runs every fsync interval: sync, or retry a failed disk.
func (w *evWriter) tick() {
	if w.broken && !w.cfg.Now().Before(w.retryAt) {
		w.retryDisk()
	}
	w.flush()
	if len(w.wait) > 0 { // someone waits for durability: sync now
		w.sync()
		w.answer()
		return
	}
	w.syncAsync()
}

// retryDisk tries the disk again: first the control records kept, then
// the gap record for the hits lost meanwhile.
func (w *evWriter) retryDisk() {
	w.broken = false
	retry, lost := w.retry, w.diskLost
	w.retry, w.diskLost = nil, evLoss{}
	for _, r := range retry {
		w.put(r)
	}
	if lost.n > 0 {
		w.put(&evRecord{kind: evGap, ts: w.cfg.Now(), lost: lost.n, from: lost.from, until: lost.until, reason: "disk"})
	}
	if w.flush() {
		if lost.n > 0 || len(retry) > 0 {
			w.log.Info("evidence: writing again", "lost", lost.n)
		}
		return
	}
	// Still failing: fold the gap record back into the running loss, so
	// that one gap record covers the whole outage.
	out := w.retry[:0]
	for _, r := range w.retry {
		if r.kind == evGap && r.reason == "disk" {
			w.diskLost.merge(evLoss{n: r.lost, from: r.from, until: r.until})
			continue
		}
		out = append(out, r)
	}
	w.retry = out
}

// closeSegment closes the segment being written; gzip it when compress.
func (w *evWriter) closeSegment(compress bool) {
	if w.f != nil {
		w.sync()
		if err := w.f.Close(); err != nil {
			w.m.writeErrors.Inc()
			w.log.Error("evidence: close segment", "segment", w.segName, "err", err)
		}
		if compress && w.onClosed != nil {
			w.onClosed(filepath.Join(w.cfg.Dir, w.segName))
		}
	}
	w.f, w.segName, w.fileSize, w.needTrunc = nil, "", 0, false
}

// close writes what is left (retrying a failed disk once), syncs and
// closes the segment. The stop record is already in buf.
func (w *evWriter) close() {
	if w.broken {
		w.retryDisk()
	}
	w.flush()
	if w.broken {
		w.closeErr = fmt.Errorf("sinkhole: evidence: closing with %d records unwritten and %d hits lost: disk failing",
			len(w.retry), w.diskLost.n)
	}
	w.sync()
	w.answer()
	for _, r := range w.retry {
		if r.done != nil {
			r.done <- ErrLogClosed
		}
	}
	w.closeSegment(false)
}
