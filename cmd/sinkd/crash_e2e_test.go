package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// crashSinkhole is the sinkhole address of the crash test's answers.
const crashSinkhole = "192.0.2.254"

// crashLoad sends blocked queries with unique names (h<N>.evil.example),
// one at a time from each of its workers, until the server is killed; it
// remembers what each query got.
type crashLoad struct {
	next   atomic.Int64
	killed atomic.Bool  // set just before SIGKILL: a query unanswered from then on was in flight
	deadAt atomic.Int64 // unix ns when the process had exited: every reply it sent is buffered by then
	wg     sync.WaitGroup
	res    []crashResult // one per worker
}

type crashResult struct {
	answered []string // got a sinkhole answer
	inFlight []string // sent while the server lived, no answer: it was killed
	failed   []string // no or a wrong answer while the server lived
	sent     int
}

// startCrashLoad starts workers querying addr over UDP.
func startCrashLoad(t *testing.T, addr string, workers int) *crashLoad {
	t.Helper()
	l := &crashLoad{res: make([]crashResult, workers)}
	for i := range workers {
		co, err := dns.DialTimeout("udp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = co.Close() })
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.work(co, &l.res[i])
		}()
	}
	return l
}

func (l *crashLoad) work(co *dns.Conn, res *crashResult) {
	for !l.killed.Load() {
		name := fmt.Sprintf("h%d.evil.example.", l.next.Add(1))
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		res.sent++
		_ = co.SetWriteDeadline(time.Now().Add(5 * time.Second))
		var reply *dns.Msg
		err := co.WriteMsg(m)
		if err == nil {
			reply, err = l.read(co)
		}
		switch {
		case err == nil && reply.Id == m.Id && crashIsSinkholed(reply, name):
			res.answered = append(res.answered, name)
		case err != nil && l.killed.Load():
			res.inFlight = append(res.inFlight, name)
		case err != nil:
			res.failed = append(res.failed, name+": "+err.Error())
		default:
			res.failed = append(res.failed, name+": unexpected answer "+reply.String())
		}
	}
}

// read waits for the reply: up to 10 s while the server lives, and one
// more second once it has exited (a reply it sent is in the socket buffer
// by then).
func (l *crashLoad) read(co *dns.Conn) (*dns.Msg, error) {
	giveUp := time.Now().Add(10 * time.Second)
	for {
		_ = co.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		r, err := co.ReadMsg()
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			return r, err
		}
		dead := l.deadAt.Load()
		if time.Now().After(giveUp) || dead != 0 && time.Since(time.Unix(0, dead)) > time.Second {
			return nil, err
		}
	}
}

// crashIsSinkholed tells whether r is the sinkhole answer to name.
func crashIsSinkholed(r *dns.Msg, name string) bool {
	if r.Rcode != dns.RcodeSuccess || len(r.Question) != 1 || r.Question[0].Name != name || len(r.Answer) != 1 {
		return false
	}
	a, ok := r.Answer[0].(*dns.A)
	return ok && a.A.String() == crashSinkhole
}

// kill sends SIGKILL to in while the load runs and waits for the workers.
func (l *crashLoad) kill(t *testing.T, in *instance) {
	t.Helper()
	l.killed.Store(true)
	if err := in.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("sinkd still running 15 s after SIGKILL")
	}
	l.deadAt.Store(time.Now().UnixNano())
	var ee *exec.ExitError
	if !errors.As(in.exitErr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("sinkd exit: %v, want killed by SIGKILL", in.exitErr)
	}
	l.wg.Wait()
}

// evLog is an evidence directory as the files hold it: its complete lines
// in chain order, and the bytes after the last newline of the newest
// segment (a line being written or torn).
type evLog struct {
	lines    []string
	tail     string
	segments []string
}

var crashSegRe = regexp.MustCompile(`^hits-\d{8}T\d{6}Z-(\d{12})\.jsonl(\.gz)?$`)

// readEvLog reads every segment of dir (gzip'ed ones too).
func readEvLog(t *testing.T, dir string) evLog {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if crashSegRe.MatchString(e.Name()) {
			segs = append(segs, e.Name())
		}
	}
	first := func(name string) string { return crashSegRe.FindStringSubmatch(name)[1] }
	slices.SortFunc(segs, func(a, b string) int { return strings.Compare(first(a), first(b)) })
	var l evLog
	for i, name := range segs {
		b := crashReadSeg(t, filepath.Join(dir, name))
		lines := strings.SplitAfter(string(b), "\n")
		if tail := lines[len(lines)-1]; tail != "" {
			if i != len(segs)-1 {
				t.Fatalf("segment %s (not the newest) ends with an incomplete line %q", name, tail)
			}
			l.tail = tail
		}
		for _, s := range lines[:len(lines)-1] {
			l.lines = append(l.lines, strings.TrimSuffix(s, "\n"))
		}
		l.segments = append(l.segments, filepath.Join(dir, name))
	}
	return l
}

func crashReadSeg(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// crashRec is the part of a record the crash test looks at.
type crashRec struct {
	Type   string   `json:"type"`
	Seq    int      `json:"seq"`
	TS     string   `json:"ts"`
	Client string   `json:"client"`
	QName  string   `json:"qname"`
	List   string   `json:"list"`
	Action string   `json:"action"`
	Answer []string `json:"answer"`
	Lost   int      `json:"lost"`
	From   string   `json:"from"`
	Until  string   `json:"until"`
	Reason string   `json:"reason"`
	Hash   string   `json:"hash"`
}

func parseCrashRec(t *testing.T, line string) crashRec {
	t.Helper()
	var r crashRec
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("record %q: %v", line, err)
	}
	return r
}

// TestEvidenceSurvivesKill9 kills the real binary with SIGKILL while it
// answers a load of blocked queries, tears the newest segment's last line
// as a crash in the middle of write(2) would, and checks what a user then
// sees: verify before and after the restart, the torn gap record, and that
// every hit written before the crash is still there, unchanged.
func TestEvidenceSurvivesKill9(t *testing.T) {
	t.Parallel()
	const (
		workers = 4
		minHits = 2000 // hits on disk before the kill
	)
	up := fakeUpstream(t, "good.example. 300 IN A 192.0.2.10")
	hitsDir := filepath.Join(t.TempDir(), "hits")
	yaml := `
instance: crash-1
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["` + up + `"]
zones:
  dir: ZONES
evidence:
  dir: ` + hitsDir + `
sinkhole:
  ipv4: ` + crashSinkhole + `
`
	lists := map[string]string{"malware.txt": "evil.example\n"}
	in := startSinkd(t, yaml, lists)

	load := startCrashLoad(t, in.dns, workers)
	deadline := time.Now().Add(30 * time.Second)
	for metricValue(t, in, `sinkd_evidence_records_total{type="hit"}`) < minHits {
		if time.Now().After(deadline) {
			load.kill(t, in)
			t.Fatalf("fewer than %d hits written after 30 s", minHits)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// What the log holds now must survive: read it, then kill at once.
	written := readEvLog(t, hitsDir)
	load.kill(t, in)

	var answered, inFlight []string
	sent := 0
	for _, r := range load.res {
		answered = append(answered, r.answered...)
		inFlight = append(inFlight, r.inFlight...)
		sent += r.sent
		for _, f := range r.failed {
			t.Errorf("query before the kill: %s", f)
		}
	}
	if len(inFlight) > workers {
		t.Errorf("%d queries in flight at the kill, want at most one per worker (%d)", len(inFlight), workers)
	}

	var hitsWritten int
	for _, line := range written.lines {
		if parseCrashRec(t, line).Type == "hit" {
			hitsWritten++
		}
	}
	if hitsWritten < minHits {
		t.Fatalf("the segment holds %d hits when the metric said %d were written", hitsWritten, minHits)
	}
	crashed := readEvLog(t, hitsDir)
	if len(crashed.lines) < len(written.lines) || !slices.Equal(crashed.lines[:len(written.lines)], written.lines) {
		t.Fatal("lines written before the kill changed by the time the process died")
	}
	if crashed.tail != "" {
		t.Logf("the kill itself tore a line: %d bytes", len(crashed.tail))
	}

	// A crash in the middle of write(2) leaves half a line: append one,
	// shaped like the next record, without its newline.
	last := parseCrashRec(t, crashed.lines[len(crashed.lines)-1])
	next := strings.Replace(crashed.lines[len(crashed.lines)-1], `"seq":`+strconv.Itoa(last.Seq)+`,`, `"seq":`+strconv.Itoa(last.Seq+1)+`,`, 1)
	torn := next[:len(next)/2]
	newest := crashed.segments[len(crashed.segments)-1]
	f, err := os.OpenFile(newest, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(torn); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// verify accepts a torn last line (it cannot tell it from one being
	// written), does not count it and says so.
	out, errOut, code := sinkdCmd(t, "verify", "-dir", hitsDir)
	wantOut := fmt.Sprintf("ok: %d records in %d segments, final hash %s\n", len(crashed.lines), len(crashed.segments), last.Hash)
	wantNote := fmt.Sprintf("%s:%d: incomplete last line", newest, strings.Count(string(crashReadSeg(t, newest)), "\n")+1)
	if code != 0 || out != wantOut || !strings.Contains(errOut, wantNote) {
		t.Errorf("verify of the torn log: exit %d, %q %q; want 0, %q and %q", code, out, errOut, wantOut, wantNote)
	}

	// The restart cuts the torn line, records the gap and continues the
	// chain.
	in2 := startSinkd(t, yaml, lists)
	if got := metricValue(t, in2, `sinkd_evidence_lost_total{reason="torn"}`); got != 1 {
		t.Errorf(`sinkd_evidence_lost_total{reason="torn"} = %v after the restart, want 1`, got)
	}
	if !strings.Contains(in2.log(), "cut a torn last line") {
		t.Errorf("the restart does not log the cut:\n%s", in2.log())
	}
	in2.stop(t)

	out, errOut, code = sinkdCmd(t, "verify", "-dir", hitsDir)
	final := readEvLog(t, hitsDir)
	if code != 0 || !regexp.MustCompile(fmt.Sprintf(`^ok: %d records in %d segments, final hash [0-9a-f]{64}\n$`, len(final.lines), len(final.segments))).MatchString(out) || errOut != "" {
		t.Fatalf("verify after the restart: exit %d, %q %q; want 0 and ok: %d records", code, out, errOut, len(final.lines))
	}
	if final.tail != "" {
		t.Errorf("the torn line is still there: %q", final.tail)
	}
	// Every line of the crashed log (and so every hit written before the
	// kill) is still there, byte for byte, in its place.
	n := len(crashed.lines)
	if len(final.lines) < n+3 || !slices.Equal(final.lines[:n], crashed.lines) {
		t.Fatalf("the restarted log does not begin with the %d lines of the crashed one", n)
	}
	for i, line := range final.lines {
		if r := parseCrashRec(t, line); r.Seq != i+1 {
			t.Fatalf("record %d has seq %d", i+1, r.Seq)
		}
	}
	gap := parseCrashRec(t, final.lines[n])
	if gap.Type != "gap" || gap.Reason != "torn" || gap.Lost != 1 || gap.From != last.TS || gap.Until != gap.TS {
		t.Errorf("first record after the restart = %s\nwant a torn gap of 1 from %s", final.lines[n], last.TS)
	}
	if r := parseCrashRec(t, final.lines[n+1]); r.Type != "start" {
		t.Errorf("record after the gap: %s, want start", final.lines[n+1])
	}
	if r := parseCrashRec(t, final.lines[len(final.lines)-1]); r.Type != "stop" || r.Reason != "terminated signal received" {
		t.Errorf("last record %s, want the stop of SIGTERM", final.lines[len(final.lines)-1])
	}

	// Hit records: one per query, each for a sinkhole answer the client got
	// (or, as RecordHit precedes the reply, for a query in flight at the
	// kill), and only from before the crash.
	isAnswered := map[string]bool{}
	for _, q := range answered {
		isAnswered[strings.TrimSuffix(q, ".")] = true
	}
	isInFlight := map[string]bool{}
	for _, q := range inFlight {
		isInFlight[strings.TrimSuffix(q, ".")] = true
	}
	seen := map[string]bool{}
	recorded, inFlightRecorded := 0, 0
	for i, line := range final.lines {
		r := parseCrashRec(t, line)
		if r.Type != "hit" {
			continue
		}
		switch {
		case i >= n:
			t.Errorf("hit record after the restart: %s", line)
		case seen[r.QName]:
			t.Errorf("second hit record for %s", r.QName)
		case isAnswered[r.QName]:
			recorded++
		case isInFlight[r.QName]:
			inFlightRecorded++
		default:
			t.Errorf("hit record for a query that got no sinkhole answer: %s", line)
		}
		seen[r.QName] = true
		if r.Client != "127.0.0.1" || r.List != "malware.txt" || r.Action != "sinkhole" ||
			len(r.Answer) != 1 || r.Answer[0] != r.QName+". 60 IN A "+crashSinkhole {
			t.Errorf("hit record %s", line)
		}
	}
	t.Logf("queries sent %d, sinkhole answers %d, in flight at the kill %d (%d of them recorded); "+
		"hits on disk before the kill %d, recorded at the crash %d; answered but not recorded (queued or buffered at the kill) %d",
		sent, len(answered), len(inFlight), inFlightRecorded, hitsWritten, recorded+inFlightRecorded, len(answered)-recorded)
}
