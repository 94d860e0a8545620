package sinkhole

// The evidence log: one JSON line per hit (and per start, stop, reload, gap
// and prune), hash-chained, written by one goroutine off the query path.
// DESIGN.md "Evidence" is the contract for the record fields, the chain, the
// segment names and what `sinkd verify` and `sinkd hits` accept.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Evidence log defaults (DESIGN.md "Config").
const (
	DefaultFsyncInterval = time.Second
	DefaultSegmentSize   = 64 << 20
	DefaultRetention     = 400 * 24 * time.Hour
	DefaultQueue         = 65536
	// MinHMACKeyLen is the shortest evidence.hmac_key_file key accepted.
	MinHMACKeyLen = 32
)

// Errors of the evidence log.
var (
	// ErrHMACKeyShort is returned for an HMAC key of fewer than
	// MinHMACKeyLen bytes.
	ErrHMACKeyShort = errors.New("sinkhole: evidence hmac key shorter than 32 bytes")
	// ErrLogLocked is returned by OpenLog when another process writes the
	// same evidence directory.
	ErrLogLocked = errors.New("sinkhole: evidence directory in use by another process")
	// ErrLogClosed is returned by calls on a closed Log.
	ErrLogClosed = errors.New("sinkhole: evidence log closed")
)

// LogConfig configures the evidence log (the evidence.* keys of sinkd.yaml).
type LogConfig struct {
	Dir           string        // evidence.dir; created 0750 if missing
	Instance      string        // this server's name, in every record
	Version       string        // sinkd's version, in start records
	FsyncInterval time.Duration // data reaches the disk at least this often
	SegmentSize   int64         // a segment is closed once it reaches this many bytes
	Retention     time.Duration // segments whose records are all older are deleted; 0 keeps all
	Queue         int           // hits waiting for the writer; more are lost (and counted)
	HMACKey       []byte        // nil: SHA-256 chain; else HMAC-SHA-256 with this key
	DHCPLeases    string        // a dnsmasq, ISC dhcpd or Kea leases file naming clients; "" = none
	// CorrelationWindow is how long each client's hits are kept for
	// linking contacts (LastHit); 0: DefaultCorrelationWindow.
	CorrelationWindow time.Duration

	// Now is the clock (nil: time.Now). Tests move it.
	Now func() time.Time
	// Neighbours returns the link-layer address of an on-link client
	// (nil: the kernel's neighbour table).
	Neighbours func(netip.Addr) (mac string, ok bool)

	// openFile opens segment files for appending; tests inject failing
	// files. nil: os.OpenFile.
	openFile func(name string, flag int, perm os.FileMode) (evFile, error)
}

// DefaultLogConfig returns the defaults of everything but Dir, Instance and
// Version.
func DefaultLogConfig() LogConfig {
	return LogConfig{
		Dir:           "./data/hits",
		FsyncInterval: DefaultFsyncInterval,
		SegmentSize:   DefaultSegmentSize,
		Retention:     DefaultRetention,
		Queue:         DefaultQueue,
	}
}

// Validate reports the first invalid setting.
func (c *LogConfig) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("sinkhole: evidence.dir is empty")
	case c.FsyncInterval <= 0:
		return fmt.Errorf("sinkhole: evidence.fsync_interval %v: want > 0", c.FsyncInterval)
	case c.SegmentSize < 4096:
		return fmt.Errorf("sinkhole: evidence.segment_size %d: want at least 4KiB", c.SegmentSize)
	case c.Retention < 0:
		return fmt.Errorf("sinkhole: evidence.retention %v: want >= 0", c.Retention)
	case c.Queue < 1:
		return fmt.Errorf("sinkhole: evidence.queue %d: want >= 1", c.Queue)
	case c.HMACKey != nil && len(c.HMACKey) < MinHMACKeyLen:
		return fmt.Errorf("%w (%d bytes)", ErrHMACKeyShort, len(c.HMACKey))
	}
	return nil
}

// ReadHMACKey reads an HMAC key file: its bytes, one trailing newline ("\n"
// or "\r\n") removed. A key shorter than MinHMACKeyLen is an error wrapping
// ErrHMACKeyShort.
func ReadHMACKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sinkhole: hmac key: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) < MinHMACKeyLen {
		return nil, fmt.Errorf("%w: %s has %d bytes", ErrHMACKeyShort, path, len(b))
	}
	return b, nil
}

// ReloadSource is one list in a start or reload record.
type ReloadSource struct {
	List   string `json:"list"`
	SHA256 string `json:"sha256"`
	Status string `json:"status"` // ok, failed, kept-last-good
	Rules  int    `json:"rules"`
}

// ReloadChange is one list whose content changed in a reload: Old is ""
// for a new list, New is "" for a removed one.
type ReloadChange struct {
	List      string `json:"list"`
	OldSHA256 string `json:"old_sha256,omitempty"`
	NewSHA256 string `json:"new_sha256,omitempty"`
	Added     int    `json:"added"`
	Removed   int    `json:"removed"`
}

// Log is the evidence log. It implements Recorder: RecordHit hands a hit to
// the writer goroutine through a bounded queue and never blocks. OpenLog
// starts the writer; Close stops it.
type Log struct {
	cfg  LogConfig
	log  *slog.Logger
	m    *evMetrics
	hits chan *Hit
	// contacts wait here for the writer (package listener)
	contacts chan *Contact
	ctl      chan *evRecord
	quit     chan struct{}
	done     chan struct{}
	w        *evWriter // owned by the writer goroutine once started

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool

	// Hits the queue had no room for, and the first and last of their
	// times (unix ns), until the writer records a gap.
	lost      atomic.Int64
	lostFrom  atomic.Int64
	lostUntil atomic.Int64

	maint *evMaint
}

var _ Recorder = (*Log)(nil)

// OpenLog opens (creating it if needed) the evidence directory, recovers
// after a crash (a torn last line is cut and recorded as a gap with reason
// torn), resumes the chain and starts the writer. Close stops it.
func OpenLog(cfg LogConfig, reg prometheus.Registerer, logger *slog.Logger) (*Log, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("sinkhole: evidence: %w", err)
	}
	unlock, err := evLockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		cfg:      cfg,
		log:      logger,
		hits:     make(chan *Hit, cfg.Queue),
		contacts: make(chan *Contact, min(cfg.Queue, 8192)),
		ctl:      make(chan *evRecord, 64),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	l.m = newEvMetrics(reg, func() float64 { return float64(len(l.hits)) })
	w, torn, err := newEvWriter(&l.cfg, l.m, logger)
	if err != nil {
		unlock()
		return nil, err
	}
	l.w = w
	l.maint = newEvMaint(&l.cfg, l, logger)
	if torn != nil {
		l.m.lost.WithLabelValues("torn").Add(float64(torn.lost))
		w.put(torn)
		w.flush()
	}
	closed := w.closedSegments() // before the writer owns w
	logger.Info("evidence log open", "dir", cfg.Dir, "last_seq", w.chain.seq, "chain", evChainName(cfg.HMACKey))
	go func() {
		defer close(l.done)
		defer unlock()
		l.run()
	}()
	l.maint.start(closed)
	return l, nil
}

// RecordHit queues h for the writer and returns at once; h belongs to the
// log afterwards. When the queue is full the hit is counted as lost and a
// gap record says how many, from when to when.
func (l *Log) RecordHit(h *Hit) {
	if l.closed.Load() {
		return
	}
	select {
	case l.hits <- h:
		return
	default:
	}
	t := h.Time.UnixNano()
	l.lostFrom.CompareAndSwap(0, t)
	for {
		u := l.lostUntil.Load()
		if t <= u || l.lostUntil.CompareAndSwap(u, t) {
			break
		}
	}
	l.lost.Add(1)
	l.m.lost.WithLabelValues("queue").Inc()
}

// RecordStart writes the start record: sinkd's version, the chain
// ("sha256" or "hmac-sha256") and the lists in force.
func (l *Log) RecordStart(sources []ReloadSource) error {
	return l.control(&evRecord{kind: evStart, ts: l.cfg.Now(), sources: sources})
}

// RecordReload writes a reload record: every list in force after the
// reload, and the lists whose content changed.
func (l *Log) RecordReload(sources []ReloadSource, changed []ReloadChange) error {
	return l.control(&evRecord{kind: evReload, ts: l.cfg.Now(), sources: sources, changed: changed})
}

// Sync waits until every hit queued before the call is written and synced
// to disk. Tests and generators use it; the query path never does.
func (l *Log) Sync() error {
	return l.control(&evRecord{kind: evSync})
}

// control hands a non-hit record to the writer and waits until it is on
// disk (or failed: it is then retried after a gap record).
func (l *Log) control(r *evRecord) error {
	if l.closed.Load() {
		return ErrLogClosed
	}
	done := make(chan error, 1)
	r.done = done // r belongs to the writer from here on
	select {
	case l.ctl <- r:
	case <-l.done:
		return ErrLogClosed
	}
	select {
	case err := <-done:
		return err
	case <-l.done:
		return ErrLogClosed
	}
}

// Close writes everything queued, then a stop record with reason, syncs and
// closes the log. Call it after the DNS server has stopped calling
// RecordHit. Later calls return the first call's result.
func (l *Log) Close(reason string) error {
	l.closeOnce.Do(func() {
		l.closed.Store(true)
		l.maint.stop()
		l.w.stopReason = reason
		close(l.quit)
		<-l.done
		l.closeErr = l.w.closeErr
	})
	return l.closeErr
}

// Dir is the evidence directory.
func (l *Log) Dir() string { return l.cfg.Dir }

// evPoll is how often the writer collects hits while they keep coming.
// Between polls a hit is only a buffered channel send: no goroutine wakes
// up, so a flood of hits costs the query path no scheduler work, and the
// writer issues at most one write(2) per poll.
const evPoll = 2 * time.Millisecond

// evYieldEvery is how many records the writer encodes before it lets other
// goroutines (the DNS server's) run: its bursts stay short.
const evYieldEvery = 32

// run is the writer goroutine. Idle, it waits on the queue; the first hit
// starts polling, which lasts until a poll finds nothing.
func (l *Log) run() {
	w := l.w
	tick := time.NewTicker(l.cfg.FsyncInterval)
	defer tick.Stop()
	poll := time.NewTimer(evPoll)
	poll.Stop()
	defer poll.Stop()
	hits, contacts := l.hits, l.contacts // nil while polling
	for {
		select {
		case h := <-hits:
			w.hit(h)
			hits, contacts = nil, nil
			poll.Reset(evPoll)
		case c := <-contacts:
			w.contact(c)
			hits, contacts = nil, nil
			poll.Reset(evPoll)
		case <-poll.C:
			if l.drain(false) == 0 {
				hits, contacts = l.hits, l.contacts
			} else {
				poll.Reset(evPoll)
			}
		case r := <-l.ctl:
			l.drain(false)
			w.put(r)
			w.flush()
			l.syncIfNeeded(r)
		case <-tick.C:
			l.queueGap()
			w.tick()
			w.corr.expire(l.cfg.Now())
		case <-l.quit:
			l.drain(true)
			w.put(&evRecord{kind: evStop, ts: l.cfg.Now(), reason: w.stopReason})
			w.close()
			return
		}
	}
}

// drain writes every hit (and, when all, every control record) waiting in
// the queues, then flushes. It returns how many records it took.
func (l *Log) drain(all bool) int {
	w := l.w
	n := 0
	for {
		select {
		case h := <-l.hits:
			n++
			w.hit(h)
			if len(w.buf) >= evFlushSize {
				w.flush()
			}
			if n%evYieldEvery == 0 {
				runtime.Gosched()
			}
			continue
		default:
		}
		// Contacts after the hits queued before them: their hits are
		// in the window by now.
		select {
		case c := <-l.contacts:
			n++
			w.contact(c)
			if len(w.buf) >= evFlushSize {
				w.flush()
			}
			continue
		default:
		}
		if all {
			select {
			case r := <-l.ctl:
				n++
				w.put(r)
				continue
			default:
			}
		}
		break
	}
	l.queueGap()
	w.flush()
	return n
}

// syncIfNeeded fsyncs after a control record whose caller waits (sync,
// prune, start, reload) and answers it.
func (l *Log) syncIfNeeded(r *evRecord) {
	if r.done == nil {
		return
	}
	l.w.sync()
	l.w.answer()
}

// queueGap turns hits lost to a full queue into a gap record.
func (l *Log) queueGap() {
	n := l.lost.Load()
	if n == 0 {
		return
	}
	from := l.lostFrom.Swap(0)
	until := l.lostUntil.Swap(0)
	l.lost.Add(-n)
	// RecordHit may have counted a loss whose times it had not stored yet:
	// never state a time that was not observed as the epoch.
	now := l.cfg.Now().UnixNano()
	if until == 0 {
		until = now
	}
	if from == 0 {
		from = until
	}
	l.w.put(&evRecord{kind: evGap, ts: l.cfg.Now(), lost: n, reason: "queue",
		from: time.Unix(0, from), until: time.Unix(0, until)})
}
