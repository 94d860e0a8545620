package sinkhole

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
)

// evClock is a settable clock safe for the writer goroutine to read.
type evClock struct{ ns atomic.Int64 }

func newEvClock(t time.Time) *evClock {
	c := &evClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *evClock) Now() time.Time              { return time.Unix(0, c.ns.Load()).UTC() }
func (c *evClock) Add(d time.Duration)         { c.ns.Add(int64(d)) }
func (c *evClock) Set(t time.Time)             { c.ns.Store(t.UnixNano()) }
func evT0() time.Time                          { return time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC) }
func evNoNeighbours(netip.Addr) (string, bool) { return "", false }

// evTestConfig is a config for a log in a fresh temp dir.
func evTestConfig(t *testing.T, clock *evClock) LogConfig {
	t.Helper()
	cfg := DefaultLogConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "hits")
	cfg.Instance = "test-1"
	cfg.Version = "v0.0.0-test"
	cfg.Now = clock.Now
	cfg.Neighbours = evNoNeighbours
	cfg.FsyncInterval = 10 * time.Millisecond
	return cfg
}

// evOpen opens a log and closes it at cleanup (if the test did not).
func evOpenLog(t *testing.T, cfg LogConfig) (*Log, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	l, err := OpenLog(cfg, reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close("test cleanup") })
	return l, reg
}

// evWire packs a reply to name/qtype with the given answer records.
func evWire(t testing.TB, name string, qtype uint16, rcode int, rrs ...string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.Response, m.Rcode = true, rcode
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var evMalware = &Source{Name: "malware.txt", SHA256: strings.Repeat("ab", 32), Category: "malware"}

// evTestHit is a qname hit of client on name at ts.
func evTestHit(t testing.TB, ts time.Time, client, name string) *Hit {
	t.Helper()
	return &Hit{
		Time:    ts,
		Client:  netip.AddrPortFrom(netip.MustParseAddr(client), 40000),
		Proto:   "udp",
		QName:   name,
		QType:   dns.TypeA,
		Trigger: TriggerQName,
		Match:   name,
		Rule:    "evil.example",
		List:    evMalware,
		Action:  ActionSinkhole,
		Answer:  evWire(t, name, dns.TypeA, dns.RcodeSuccess, name+". 60 IN A 0.0.0.0"),
		Rcode:   dns.RcodeSuccess,
	}
}

// evReadAll returns every line of every segment of dir, in order.
func evReadAll(t *testing.T, dir string) []string {
	t.Helper()
	segs, _, err := evListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range segs {
		r, err := evOpen(s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		_ = r.Close()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(b)) {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

// evRecords decodes every record of dir.
func evRecords(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range evReadAll(t, dir) {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line is not JSON: %v\n%s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// evKeys returns the member names of a JSON object line, in order.
func evKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// evRefHash computes a line's hash straight from DESIGN.md's words: hex
// SHA-256 (HMAC with key) over the 64 hex chars of prev followed by the
// line's bytes without `,"hash":"..."`.
func evRefHash(line string, key []byte) (got, want string) {
	i := strings.LastIndex(line, `,"hash":"`)
	without := line[:i] + line[i+len(`,"hash":"`)+64+1:]
	var rec struct{ Prev, Hash string }
	_ = json.Unmarshal([]byte(line), &rec)
	var h = sha256.New()
	if key != nil {
		h = hmac.New(sha256.New, key)
	}
	h.Write([]byte(rec.Prev))
	h.Write([]byte(without))
	return rec.Hash, hex.EncodeToString(h.Sum(nil))
}

func TestEvidenceChainRoundTrip(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	cfg.Neighbours = func(a netip.Addr) (string, bool) {
		if a == netip.MustParseAddr("192.168.1.23") {
			return "aa:bb:cc:dd:ee:ff", true
		}
		return "", false
	}
	l, _ := evOpenLog(t, cfg)
	if err := l.RecordStart([]ReloadSource{{List: "malware.txt", SHA256: evMalware.SHA256, Status: "ok", Rules: 3}}); err != nil {
		t.Fatal(err)
	}
	ts := evT0().Add(time.Second)
	l.RecordHit(evTestHit(t, ts, "192.168.1.23", "www.evil.example"))
	cname := &Hit{
		Time: ts.Add(time.Millisecond), Client: netip.MustParseAddrPort("[::ffff:10.0.0.7]:5353"), Proto: "tcp",
		QName: "cdn.example", QType: dns.TypeAAAA, Trigger: TriggerCNAME, Match: "Tracker.Bad.Example.",
		Rule: "||bad.example^", Note: "seen in \"campaign\" 7", List: &Source{Name: "feeds/ads.txt", SHA256: strings.Repeat("cd", 32)},
		Action: ActionNXDomain, Answer: evWire(t, "cdn.example", dns.TypeAAAA, dns.RcodeNameError),
		Upstream: evWire(t, "cdn.example", dns.TypeAAAA, dns.RcodeSuccess,
			"cdn.example. 300 IN CNAME tracker.bad.example.", "tracker.bad.example. 300 IN AAAA 2001:db8::1"),
		Rcode: dns.RcodeNameError,
	}
	l.RecordHit(cname)
	odd := &Hit{Time: ts.Add(2 * time.Millisecond), Client: netip.MustParseAddrPort("[2001:db8::5]:1"), Proto: "udp",
		QName: "x.evil.example", QType: 65400, Trigger: TriggerQName, Match: "x.evil.example", Rule: "evil.example",
		List: evMalware, Action: ActionDrop}
	l.RecordHit(odd)
	if err := l.RecordReload([]ReloadSource{{List: "malware.txt", SHA256: "11", Status: "ok", Rules: 4}},
		[]ReloadChange{{List: "malware.txt", OldSHA256: evMalware.SHA256, NewSHA256: "11", Added: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close("terminated signal received"); err != nil {
		t.Fatal(err)
	}

	lines := evReadAll(t, cfg.Dir)
	if len(lines) != 6 {
		t.Fatalf("got %d lines, want 6 (start, 3 hits, reload, stop):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	wantKeys := [][]string{
		{"type", "seq", "ts", "instance", "version", "chain", "sources", "prev", "hash"},
		{"type", "seq", "ts", "instance", "client", "client_port", "proto", "qname", "qtype", "trigger", "match", "rule", "list", "list_sha256", "action", "answer", "mac", "category", "rcode", "prev", "hash"},
		{"type", "seq", "ts", "instance", "client", "client_port", "proto", "qname", "qtype", "trigger", "match", "rule", "list", "list_sha256", "action", "upstream", "rcode", "note", "prev", "hash"},
		{"type", "seq", "ts", "instance", "client", "client_port", "proto", "qname", "qtype", "trigger", "match", "rule", "list", "list_sha256", "action", "category", "prev", "hash"},
		{"type", "seq", "ts", "instance", "sources", "changed", "prev", "hash"},
		{"type", "seq", "ts", "instance", "reason", "prev", "hash"},
	}
	for i, line := range lines {
		if got := evKeys(t, line); !slices.Equal(got, wantKeys[i]) {
			t.Errorf("line %d members:\n got %v\nwant %v", i+1, got, wantKeys[i])
		}
		if got, want := evRefHash(line, nil); got != want {
			t.Errorf("line %d: hash %s, want %s (DESIGN.md definition)", i+1, got, want)
		}
	}
	wantLines := []string{
		`{"type":"start","seq":1,"ts":"2025-03-14T15:09:26.535897932Z","instance":"test-1","version":"v0.0.0-test","chain":"sha256","sources":[{"list":"malware.txt","sha256":"` + evMalware.SHA256 + `","status":"ok","rules":3}],"prev":"` + evZeroHash + `"`,
		`{"type":"hit","seq":2,"ts":"2025-03-14T15:09:27.535897932Z","instance":"test-1","client":"192.168.1.23","client_port":40000,"proto":"udp","qname":"www.evil.example","qtype":"A","trigger":"qname","match":"www.evil.example","rule":"evil.example","list":"malware.txt","list_sha256":"` + evMalware.SHA256 + `","action":"sinkhole","answer":["www.evil.example. 60 IN A 0.0.0.0"],"mac":"aa:bb:cc:dd:ee:ff","category":"malware","rcode":"NOERROR","prev":"`,
		`{"type":"hit","seq":3,"ts":"2025-03-14T15:09:27.536897932Z","instance":"test-1","client":"10.0.0.7","client_port":5353,"proto":"tcp","qname":"cdn.example","qtype":"AAAA","trigger":"cname","match":"tracker.bad.example","rule":"||bad.example^","list":"feeds/ads.txt","list_sha256":"` + strings.Repeat("cd", 32) + `","action":"nxdomain","upstream":["cdn.example. 300 IN CNAME tracker.bad.example.","tracker.bad.example. 300 IN AAAA 2001:db8::1"],"rcode":"NXDOMAIN","note":"seen in \"campaign\" 7","prev":"`,
		`{"type":"hit","seq":4,"ts":"2025-03-14T15:09:27.537897932Z","instance":"test-1","client":"2001:db8::5","client_port":1,"proto":"udp","qname":"x.evil.example","qtype":"TYPE65400","trigger":"qname","match":"x.evil.example","rule":"evil.example","list":"malware.txt","list_sha256":"` + evMalware.SHA256 + `","action":"drop","category":"malware","prev":"`,
		`{"type":"reload","seq":5,"ts":"2025-03-14T15:09:26.535897932Z","instance":"test-1","sources":[{"list":"malware.txt","sha256":"11","status":"ok","rules":4}],"changed":[{"list":"malware.txt","old_sha256":"` + evMalware.SHA256 + `","new_sha256":"11","added":1,"removed":0}],"prev":"`,
		`{"type":"stop","seq":6,"ts":"2025-03-14T15:09:26.535897932Z","instance":"test-1","reason":"terminated signal received","prev":"`,
	}
	for i, line := range lines {
		if !strings.HasPrefix(line, wantLines[i]) {
			t.Errorf("line %d:\n got %s\nwant prefix %s", i+1, line, wantLines[i])
		}
	}
	res, err := Verify(context.Background(), cfg.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last struct{ Hash string }
	_ = json.Unmarshal([]byte(lines[5]), &last)
	if res.Records != 6 || res.Segments != 1 || res.FinalHash != last.Hash || res.Incomplete {
		t.Errorf("Verify = %+v, want 6 records in 1 segment, final hash %s", res, last.Hash)
	}
	segs, _, _ := evListSegments(cfg.Dir)
	if want := "hits-20250314T150926Z-000000000001.jsonl"; len(segs) != 1 || segs[0].name != want {
		t.Errorf("segments %v, want [%s]", segs, want)
	}
	st, err := os.Stat(segs[0].path)
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("segment mode %v, want 0640 (%v)", st.Mode().Perm(), err)
	}
	if st, err := os.Stat(cfg.Dir); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("dir mode %v, want 0750", st.Mode().Perm())
	}
}

func TestEvidenceResumesAcrossRestarts(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	for run := range 3 {
		l, err := OpenLog(cfg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = l.RecordStart(nil)
		l.RecordHit(evTestHit(t, clock.Now(), "192.168.1.2", fmt.Sprintf("r%d.evil.example", run)))
		if err := l.Close("done"); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Minute)
	}
	recs := evRecords(t, cfg.Dir)
	if len(recs) != 9 {
		t.Fatalf("%d records, want 9", len(recs))
	}
	for i, r := range recs {
		if r["seq"].(float64) != float64(i+1) {
			t.Errorf("record %d has seq %v", i, r["seq"])
		}
	}
	segs, _, _ := evListSegments(cfg.Dir)
	if len(segs) != 1 {
		t.Errorf("%d segments, want 1 (a restart on the same day appends)", len(segs))
	}
	if res, err := Verify(context.Background(), cfg.Dir, nil); err != nil || res.Records != 9 {
		t.Errorf("Verify = %+v, %v", res, err)
	}
}

func TestEvidenceDirectoryLocked(t *testing.T) {
	t.Parallel()
	cfg := evTestConfig(t, newEvClock(evT0()))
	evOpenLog(t, cfg)
	if _, err := OpenLog(cfg, nil, nil); !errors.Is(err, ErrLogLocked) {
		t.Errorf("second OpenLog: %v, want ErrLogLocked", err)
	}
}

func TestEvidenceConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mod     func(*LogConfig)
		wantErr string
	}{
		{name: "defaults", mod: func(*LogConfig) {}},
		{name: "no dir", mod: func(c *LogConfig) { c.Dir = "" }, wantErr: "evidence.dir"},
		{name: "fsync", mod: func(c *LogConfig) { c.FsyncInterval = 0 }, wantErr: "fsync_interval"},
		{name: "segment", mod: func(c *LogConfig) { c.SegmentSize = 100 }, wantErr: "segment_size"},
		{name: "queue", mod: func(c *LogConfig) { c.Queue = 0 }, wantErr: "queue"},
		{name: "retention", mod: func(c *LogConfig) { c.Retention = -1 }, wantErr: "retention"},
		{name: "short key", mod: func(c *LogConfig) { c.HMACKey = []byte("short") }, wantErr: "shorter than 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := DefaultLogConfig()
			tt.mod(&c)
			err := c.Validate()
			if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadHMACKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := strings.Repeat("k", 32)
	tests := []struct {
		name    string
		content string
		want    string
		wantErr error
	}{
		{name: "newline removed", content: key + "\n", want: key},
		{name: "crlf removed", content: key + "\r\n", want: key},
		{name: "only one newline removed", content: key + "\n\n", want: key + "\n"},
		{name: "no newline", content: key, want: key},
		{name: "31 bytes", content: key[:31] + "\n", wantErr: ErrHMACKeyShort},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := ReadHMACKey(p)
			if !errors.Is(err, tt.wantErr) || string(got) != tt.want {
				t.Errorf("ReadHMACKey = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// evWriteLog writes n hits (with a start and a stop record) and returns
// the directory.
func evWriteLog(t *testing.T, cfg LogConfig, clock *evClock, n int) {
	t.Helper()
	l, err := OpenLog(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.RecordStart(nil)
	for i := range n {
		clock.Add(time.Second)
		l.RecordHit(evTestHit(t, clock.Now(), fmt.Sprintf("192.168.1.%d", i%200+1), fmt.Sprintf("h%d.evil.example", i)))
		if i%50 == 49 {
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
}

func TestEvidenceHMACChain(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	key := []byte(strings.Repeat("s3cret-", 6))
	cfg.HMACKey = key
	evWriteLog(t, cfg, clock, 20)
	lines := evReadAll(t, cfg.Dir)
	if !strings.Contains(lines[0], `"chain":"hmac-sha256"`) {
		t.Errorf("start record does not name the chain: %s", lines[0])
	}
	for i, line := range lines {
		if got, want := evRefHash(line, key); got != want {
			t.Fatalf("line %d: hash %s, want HMAC %s", i+1, got, want)
		}
	}
	if res, err := Verify(context.Background(), cfg.Dir, key); err != nil || res.Records != 22 {
		t.Errorf("Verify with key = %+v, %v; want 22 records", res, err)
	}
	segs, _, _ := evListSegments(cfg.Dir)
	file := segs[0].path
	tests := []struct {
		name string
		key  []byte
		want string
	}{
		{name: "no key", key: nil, want: file + ":1: hash mismatch (the chain is HMAC-SHA-256: verify with -key)"},
		{name: "wrong key", key: []byte(strings.Repeat("x", 32)), want: file + ":1: hash mismatch"},
	}
	for _, tt := range tests {
		_, err := Verify(context.Background(), cfg.Dir, tt.key)
		var ve *VerifyError
		if !errors.As(err, &ve) || err.Error() != tt.want {
			t.Errorf("%s: Verify error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// evRewrite replaces a segment's content (recompressing .gz ones).
func evRewrite(t *testing.T, s evSeg, f func(lines []string) []string) {
	t.Helper()
	r, err := evOpen(s)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	_ = r.Close()
	lines := strings.SplitAfter(string(b), "\n")
	lines = lines[:len(lines)-1] // after the last newline
	out := []byte(strings.Join(f(lines), ""))
	if s.gz {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(out)
		zw.Close()
		out = buf.Bytes()
	}
	if err := os.WriteFile(s.path, out, 0o640); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		seg      int // which segment to tamper with
		tamper   func(t *testing.T, segs []evSeg)
		wantSeg  int
		wantLine int
		want     string
	}{
		{name: "flipped byte", seg: 1, wantSeg: 1, wantLine: 3, want: "hash mismatch",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[1], func(l []string) []string {
					l[2] = strings.Replace(l[2], `"client":"192.168.1.`, `"client":"192.168.7.`, 1)
					return l
				})
			}},
		{name: "deleted line", wantSeg: 1, wantLine: 4, want: "seq ",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[1], func(l []string) []string { return slices.Delete(l, 3, 4) })
			}},
		{name: "swapped lines", wantSeg: 2, wantLine: 2, want: "seq ",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[2], func(l []string) []string { l[1], l[2] = l[2], l[1]; return l })
			}},
		{name: "inserted line", wantSeg: 1, wantLine: 5, want: "seq ",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[1], func(l []string) []string { return slices.Insert(l, 4, l[1]) })
			}},
		{name: "forged line with recomputed hash", wantSeg: 2, wantLine: 4, want: "prev does not match",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[2], func(l []string) []string {
					// Change line 3 and recompute its hash: line 4 no longer links.
					line := strings.TrimSuffix(l[2], "\n")
					line = strings.Replace(line, `"client":"192.168.1.`, `"client":"10.9.9.`, 1)
					i := strings.LastIndex(line, `,"hash":"`)
					var rec struct{ Prev string }
					_ = json.Unmarshal([]byte(line), &rec)
					sum := sha256.Sum256([]byte(rec.Prev + line[:i] + "}"))
					l[2] = line[:i] + `,"hash":"` + hex.EncodeToString(sum[:]) + `"}` + "\n"
					return l
				})
			}},
		{name: "segment removed from the middle", wantSeg: 3, wantLine: 1, want: "seq ",
			tamper: func(t *testing.T, segs []evSeg) {
				if err := os.Remove(segs[2].path); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "segment renamed", wantSeg: 1, wantLine: 1, want: "file name says",
			tamper: func(t *testing.T, segs []evSeg) {
				name := strings.Replace(segs[1].path, fmt.Sprintf("%012d", segs[1].first), fmt.Sprintf("%012d", segs[1].first+1), 1)
				if err := os.Rename(segs[1].path, name); err != nil {
					t.Fatal(err)
				}
			}},
		{name: "truncated line in an old segment", wantSeg: 1, wantLine: -1, want: "incomplete last line",
			tamper: func(t *testing.T, segs []evSeg) {
				evRewrite(t, segs[1], func(l []string) []string { l[len(l)-1] = l[len(l)-1][:40]; return l })
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newEvClock(evT0())
			cfg := evTestConfig(t, clock)
			cfg.SegmentSize = 4096
			evWriteLog(t, cfg, clock, 40)
			if err := CompressSegments(context.Background(), cfg.Dir); err != nil {
				t.Fatal(err)
			}
			segs, _, _ := evListSegments(cfg.Dir)
			if len(segs) < 5 {
				t.Fatalf("only %d segments", len(segs))
			}
			if _, err := Verify(context.Background(), cfg.Dir, nil); err != nil {
				t.Fatalf("untouched log: %v", err)
			}
			if tt.wantLine < 0 {
				tt.wantLine = len(evReadAll(t, cfg.Dir)) // placeholder, replaced below
				r, _ := evOpen(segs[tt.wantSeg])
				b, _ := io.ReadAll(r)
				_ = r.Close()
				tt.wantLine = strings.Count(string(b), "\n")
			}
			tt.tamper(t, segs)
			_, err := Verify(context.Background(), cfg.Dir, nil)
			var ve *VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("Verify error = %v, want a *VerifyError", err)
			}
			segs2, _, _ := evListSegments(cfg.Dir)
			wantFile := segs2[tt.wantSeg].path
			if tt.name == "segment removed from the middle" {
				wantFile = segs[tt.wantSeg].path
			}
			if ve.File != wantFile || ve.Line != tt.wantLine || !strings.Contains(ve.Reason, tt.want) {
				t.Errorf("Verify error = %v\nwant %s:%d: ...%s...", err, wantFile, tt.wantLine, tt.want)
			}
		})
	}
}

func TestEvidenceTornLastLine(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	evWriteLog(t, cfg, clock, 5)
	segs, _, _ := evListSegments(cfg.Dir)
	lines := evReadAll(t, cfg.Dir)
	// A crash in the middle of a write: half a line, and no stop record.
	f, err := os.OpenFile(segs[0].path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	torn := lines[3][:len(lines[3])/2]
	torn = strings.Replace(torn, `"seq":4`, `"seq":8`, 1)
	f.WriteString(torn)
	f.Close()
	if _, err := Verify(context.Background(), cfg.Dir, nil); err != nil {
		t.Fatalf("Verify with a line being written: %v", err)
	}

	clock.Add(time.Minute)
	l, reg := evOpenLog(t, cfg)
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	recs := evRecords(t, cfg.Dir)
	if len(recs) != 9 {
		t.Fatalf("%d records, want 7 + gap + stop", len(recs))
	}
	gap := recs[7]
	if gap["type"] != "gap" || gap["reason"] != "torn" || gap["lost"] != 1.0 || gap["seq"] != 8.0 {
		t.Errorf("record after the cut = %v, want a torn gap with seq 8", gap)
	}
	if gap["from"] != recs[6]["ts"] || gap["until"] != gap["ts"] {
		t.Errorf("gap from %v until %v, want from the last whole record (%v) to the restart", gap["from"], gap["until"], recs[6]["ts"])
	}
	if res, err := Verify(context.Background(), cfg.Dir, nil); err != nil || res.Records != 9 {
		t.Errorf("Verify = %+v, %v", res, err)
	}
	if got := testutil.ToFloat64(l.m.lost.WithLabelValues("torn")); got != 1 {
		t.Errorf("lost{torn} = %v", got)
	}
	_ = reg
}

func TestEvidenceTornZeros(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	evWriteLog(t, cfg, clock, 3)
	segs, _, _ := evListSegments(cfg.Dir)
	f, _ := os.OpenFile(segs[0].path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, 4096)) // a crashed file system can leave a block of zeros
	f.Write([]byte("\n"))
	f.Close()
	l, _ := evOpenLog(t, cfg)
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	if res, err := Verify(context.Background(), cfg.Dir, nil); err != nil || res.Records != 7 {
		t.Errorf("Verify = %+v, %v; want start, 3 hits, stop, gap, stop", res, err)
	}
}

func TestEvidenceRotationAndGzip(t *testing.T) {
	t.Parallel()
	clock := newEvClock(time.Date(2025, 3, 14, 23, 58, 0, 0, time.UTC))
	cfg := evTestConfig(t, clock)
	cfg.SegmentSize = 8192
	l, _ := evOpenLog(t, cfg)
	for i := range 60 {
		clock.Add(3 * time.Second) // crosses midnight at i == 39
		l.RecordHit(evTestHit(t, clock.Now(), "192.168.1.5", fmt.Sprintf("n%d.evil.example", i)))
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the background gzip of every closed segment.
	deadline := time.Now().Add(10 * time.Second)
	for {
		segs, _, _ := evListSegments(cfg.Dir)
		n := 0
		for _, s := range segs {
			if !s.gz {
				n++
			}
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closed segments not gzip'ed: %v", segs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	segs, _, _ := evListSegments(cfg.Dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want several (size 8 KiB)", len(segs))
	}
	days := map[string]bool{}
	for i, s := range segs {
		if s.gz != (i < len(segs)-1) {
			t.Errorf("segment %s: gz=%v", s.name, s.gz)
		}
		days[s.name[5:13]] = true
		r, _ := evOpen(s)
		first, _ := bufio.NewReader(r).ReadString('\n')
		_ = r.Close()
		info, _ := evInfoOf([]byte(strings.TrimSuffix(first, "\n")))
		if want := evSegName(info.lastTS, info.lastSeq); s.name != want && s.name != want+".gz" {
			t.Errorf("segment %s, first record says %s", s.name, want)
		}
		for _, line := range evReadAll(t, cfg.Dir) {
			if l, _ := evInfoOf([]byte(line)); l.lastSeq >= s.first && (i+1 == len(segs) || l.lastSeq < segs[i+1].first) &&
				evDay(l.lastTS) != evDay(s.start) {
				t.Errorf("segment %s holds seq %d of another day", s.name, l.lastSeq)
			}
		}
		if s.gz {
			if st, _ := os.Stat(s.path); st.Mode().Perm() != 0o640 {
				t.Errorf("%s mode %v", s.name, st.Mode().Perm())
			}
			// The gzip header remembers the last record, for searches
			// that skip segments by time.
			last, ok := evSegLast(s)
			scanned, err := evScanLast(s)
			if !ok || err != nil || last != scanned || last.lastSeq != segs[i+1].first-1 {
				t.Errorf("%s: header says %+v (%v), content %+v (%v)", s.name, last, ok, scanned, err)
			}
		}
	}
	if !days["20250314"] || !days["20250315"] {
		t.Errorf("no rotation at midnight: %v", days)
	}
	// Each segment stays within one UTC day.
	recs := evRecords(t, cfg.Dir)
	if len(recs) != 61 {
		t.Errorf("%d records, want 61", len(recs))
	}
	res, err := Verify(context.Background(), cfg.Dir, nil)
	if err != nil || res.Records != 61 || res.Segments != len(segs) {
		t.Errorf("Verify = %+v, %v", res, err)
	}
	// Nothing else has a visible name.
	ents, _ := os.ReadDir(cfg.Dir)
	for _, e := range ents {
		if _, ok := evParseSegName(e.Name()); !ok && !strings.HasPrefix(e.Name(), ".") {
			t.Errorf("visible non-segment file %s", e.Name())
		}
	}
}

// evBlockingFile blocks its first Write until release is closed.
type evBlockingFile struct {
	*os.File
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (f *evBlockingFile) Write(p []byte) (int, error) {
	f.once.Do(func() { close(f.entered); <-f.release })
	return f.File.Write(p)
}

func TestEvidenceQueueFullGap(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	cfg.Queue = 8
	bf := &evBlockingFile{entered: make(chan struct{}), release: make(chan struct{})}
	cfg.openFile = func(name string, flag int, perm os.FileMode) (evFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		bf.File = f
		return bf, nil
	}
	l, reg := evOpenLog(t, cfg)
	l.RecordHit(evTestHit(t, evT0(), "192.168.1.1", "first.evil.example"))
	<-bf.entered // the writer is stuck in its first write; the queue is empty
	const lost = 13
	for i := range cfg.Queue + lost {
		l.RecordHit(evTestHit(t, evT0().Add(time.Duration(i)*time.Second), "192.168.1.2", fmt.Sprintf("q%d.evil.example", i)))
	}
	if got := testutil.ToFloat64(l.m.lost.WithLabelValues("queue")); got != lost {
		t.Errorf("lost{queue} = %v, want %d", got, lost)
	}
	close(bf.release)
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	recs := evRecords(t, cfg.Dir)
	var hits int
	var gaps []map[string]any
	for _, r := range recs {
		switch r["type"] {
		case "hit":
			hits++
		case "gap":
			gaps = append(gaps, r)
		}
	}
	if hits != 1+cfg.Queue || len(gaps) != 1 {
		t.Fatalf("%d hits and %d gaps, want %d and 1", hits, len(gaps), 1+cfg.Queue)
	}
	g := gaps[0]
	wantFrom := evAppendTime(nil, evT0().Add(time.Duration(cfg.Queue)*time.Second))
	wantUntil := evAppendTime(nil, evT0().Add(time.Duration(cfg.Queue+lost-1)*time.Second))
	if g["lost"] != float64(lost) || g["reason"] != "queue" || g["from"] != string(wantFrom) || g["until"] != string(wantUntil) {
		t.Errorf("gap = %v, want lost %d from %s until %s", g, lost, wantFrom, wantUntil)
	}
	if _, err := Verify(context.Background(), cfg.Dir, nil); err != nil {
		t.Error(err)
	}
	_ = reg
}

// evFailingFile fails writes (after writing part of the data, as a full
// disk does) while fail is set.
type evFailingFile struct {
	*os.File
	fail *atomic.Bool
}

func (f *evFailingFile) Write(p []byte) (int, error) {
	if f.fail.Load() {
		n, _ := f.File.Write(p[:len(p)/2])
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(p)
}

func (f *evFailingFile) Truncate(size int64) error {
	if f.fail.Load() {
		return syscall.ENOSPC
	}
	return f.File.Truncate(size)
}

func TestEvidenceDiskFailure(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	var fail atomic.Bool
	var creates atomic.Int32
	cfg.openFile = func(name string, flag int, perm os.FileMode) (evFile, error) {
		creates.Add(1)
		if fail.Load() {
			return nil, &os.PathError{Op: "open", Path: name, Err: syscall.EROFS}
		}
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return &evFailingFile{File: f, fail: &fail}, nil
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
	const lost = 7
	for i := range lost {
		l.RecordHit(evTestHit(t, evT0().Add(time.Duration(i+1)*time.Second), "192.168.1.1", fmt.Sprintf("d%d.evil.example", i)))
	}
	if err := l.RecordReload(nil, nil); err == nil {
		t.Error("RecordReload on a failing disk: no error")
	}
	if err := l.Sync(); err == nil {
		t.Error("Sync on a failing disk: no error")
	}
	fail.Store(false)
	clock.Add(2 * evRetryInterval)
	deadline := time.Now().Add(10 * time.Second)
	for l.Sync() != nil {
		if time.Now().After(deadline) {
			t.Fatal("the log does not recover after the disk does")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.RecordHit(evTestHit(t, evT0().Add(time.Minute), "192.168.1.1", "after.evil.example"))
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	recs := evRecords(t, cfg.Dir)
	var types []string
	for _, r := range recs {
		types = append(types, r["type"].(string))
	}
	if want := []string{"start", "hit", "reload", "gap", "hit", "stop"}; !slices.Equal(types, want) {
		t.Fatalf("records %v, want %v", types, want)
	}
	g := recs[3]
	if g["lost"] != float64(lost) || g["reason"] != "disk" || g["from"] != string(evAppendTime(nil, evT0().Add(time.Second))) ||
		g["until"] != string(evAppendTime(nil, evT0().Add(lost*time.Second))) {
		t.Errorf("gap = %v, want %d hits lost to the disk", g, lost)
	}
	if res, err := Verify(context.Background(), cfg.Dir, nil); err != nil || res.Records != 6 {
		t.Errorf("Verify = %+v, %v", res, err)
	}
	if testutil.ToFloat64(l.m.writeErrors) == 0 || testutil.ToFloat64(l.m.lost.WithLabelValues("disk")) != lost {
		t.Errorf("write errors %v, lost{disk} %v", testutil.ToFloat64(l.m.writeErrors), testutil.ToFloat64(l.m.lost.WithLabelValues("disk")))
	}
}

func TestEvidenceRetentionPrunes(t *testing.T) {
	t.Parallel()
	start := evT0()
	clock := newEvClock(start)
	cfg := evTestConfig(t, clock)
	cfg.Retention = 0
	// Five days of hits, one segment per day.
	for day := range 5 {
		clock.Set(start.Add(time.Duration(day) * 24 * time.Hour))
		evWriteLog(t, cfg, clock, 3)
	}
	cfg.Retention = 48 * time.Hour
	if err := CompressSegments(context.Background(), cfg.Dir); err != nil {
		t.Fatal(err)
	}
	before, _, _ := evListSegments(cfg.Dir)
	if len(before) != 5 {
		t.Fatalf("%d segments, want 5", len(before))
	}
	clock.Set(start.Add(4*24*time.Hour + time.Hour))
	l, _ := evOpenLog(t, cfg) // retention runs at start
	deadline := time.Now().Add(10 * time.Second)
	for {
		segs, _, _ := evListSegments(cfg.Dir)
		if len(segs) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("segments after retention: %d, want 2", len(segs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	var prunes []map[string]any
	for _, r := range evRecords(t, cfg.Dir) {
		if r["type"] == "prune" {
			prunes = append(prunes, r)
		}
	}
	if len(prunes) != 3 {
		t.Fatalf("%d prune records, want 3", len(prunes))
	}
	for i, p := range prunes {
		if p["segment"] != before[i].name || p["first_seq"] != float64(before[i].first) || p["last_seq"] != float64(before[i+1].first-1) {
			t.Errorf("prune %d = %v, want segment %s", i, p, before[i].name)
		}
	}
	res, err := Verify(context.Background(), cfg.Dir, nil)
	if err != nil {
		t.Fatalf("Verify after pruning: %v", err)
	}
	if res.Segments != 2 {
		t.Errorf("Verify = %+v", res)
	}
	// Without the prune record the oldest segment no longer links.
	segs, _, _ := evListSegments(cfg.Dir)
	evRewrite(t, segs[len(segs)-1], func(l []string) []string {
		return slices.DeleteFunc(l, func(s string) bool { return strings.Contains(s, `"type":"prune"`) })
	})
	var ve *VerifyError
	if _, err := Verify(context.Background(), cfg.Dir, nil); !errors.As(err, &ve) || ve.File != segs[0].path || ve.Line != 1 {
		t.Errorf("Verify without prune records = %v, want %s:1", err, segs[0].path)
	}
}

func TestEvidenceMetricsLint(t *testing.T) {
	t.Parallel()
	cfg := evTestConfig(t, newEvClock(evT0()))
	_, reg := evOpenLog(t, cfg)
	problems, err := promlint.NewWithMetricFamilies(evGather(t, reg)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	names := map[string]bool{}
	for _, mf := range evGather(t, reg) {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"sinkd_evidence_records_total", "sinkd_evidence_lost_total", "sinkd_evidence_queue_length",
		"sinkd_evidence_write_errors_total", "sinkd_evidence_bytes_total", "sinkd_evidence_fsync_seconds"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}

func evGather(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// evSyncCountingFile counts fsyncs.
type evSyncCountingFile struct {
	*os.File
	syncs *atomic.Int32
}

func (f *evSyncCountingFile) Sync() error {
	f.syncs.Add(1)
	return f.File.Sync()
}

func TestEvidencePeriodicFsync(t *testing.T) {
	t.Parallel()
	cfg := evTestConfig(t, newEvClock(evT0()))
	var syncs atomic.Int32
	cfg.openFile = func(name string, flag int, perm os.FileMode) (evFile, error) {
		f, err := os.OpenFile(name, flag, perm)
		if err != nil {
			return nil, err
		}
		return &evSyncCountingFile{File: f, syncs: &syncs}, nil
	}
	l, _ := evOpenLog(t, cfg)
	for round := int32(1); round <= 3; round++ {
		l.RecordHit(evTestHit(t, evT0(), "192.168.1.1", "x.evil.example"))
		deadline := time.Now().Add(10 * time.Second)
		for syncs.Load() < round { // no Sync call: the fsync interval does it
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d fsyncs after 10 s, fsync_interval %v", round, syncs.Load(), cfg.FsyncInterval)
			}
			time.Sleep(time.Millisecond)
		}
	}
	n := syncs.Load()
	if err := l.Close("done"); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() <= n {
		t.Error("Close did not fsync the stop record")
	}
}

// evSlowRRs renders wire through miekg/dns only (no cache, no fast path).
func evSlowRRs(key string, wire []byte) []byte {
	var d evRenderer
	return evAppendStrings(nil, key, d.render(wire, false))
}

func TestEvidenceFastRenderMatchesMiekg(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		qname    string
		rrs      []string
		wantFast bool
	}{
		{name: "A", qname: "www.evil.example", rrs: []string{"WWW.Evil.example. 60 IN A 0.0.0.0"}, wantFast: true},
		{name: "AAAA", qname: "x.example", rrs: []string{"x.example. 300 IN AAAA 2001:db8::1", "x.example. 300 IN AAAA ::"}, wantFast: true},
		{name: "CNAME chain", qname: "cdn.example", rrs: []string{"cdn.example. 300 IN CNAME Tracker.Bad.example.", "tracker.bad.example. 300 IN A 192.0.2.9"}, wantFast: true},
		{name: "wildcard and underscore", qname: "_x.example", rrs: []string{"_x.example. 1 IN CNAME *.y.example."}, wantFast: true},
		{name: "empty answer", qname: "none.example", wantFast: true},
		{name: "v4-mapped AAAA", qname: "m.example", rrs: []string{"m.example. 60 IN AAAA ::ffff:192.0.2.1"}},
		{name: "MX", qname: "mx.example", rrs: []string{"mx.example. 60 IN MX 10 mail.example."}},
		{name: "escaped name", qname: "a\\.b.example", rrs: []string{"a\\.b.example. 60 IN A 192.0.2.1"}},
		{name: "HINFO", qname: "any.example", rrs: []string{`any.example. 60 IN HINFO "RFC8482" ""`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			wire := evWire(t, tt.qname, dns.TypeA, 0, tt.rrs...)
			fast, ok := evAppendFastRRs([]byte("x"), "answer", wire)
			if ok != tt.wantFast {
				t.Fatalf("fast path ok = %v, want %v", ok, tt.wantFast)
			}
			var d evRenderer
			got := string(d.appendRRs(nil, "answer", wire, false))
			if want := string(evSlowRRs("answer", wire)); got != want {
				t.Errorf("rendered\n %s\nwant (miekg/dns)\n %s", got, want)
			}
			if !ok && string(fast) != "x" {
				t.Errorf("a failed fast path changed buf: %q", fast)
			}
		})
	}
}

func FuzzEvidenceRender(f *testing.F) {
	f.Add(evWire(f, "cdn.example", dns.TypeA, 0, "cdn.example. 300 IN CNAME tracker.bad.example.", "tracker.bad.example. 300 IN A 192.0.2.9"))
	f.Add(evWire(f, "x.example", dns.TypeAAAA, 0, "x.example. 300 IN AAAA 2001:db8::1"))
	f.Add(evWire(f, "mx.example", dns.TypeMX, 0, "mx.example. 60 IN MX 10 mail.example."))
	f.Fuzz(func(t *testing.T, wire []byte) {
		fast, ok := evAppendFastRRs(nil, "answer", wire)
		var m dns.Msg
		if !ok || m.Unpack(wire) != nil {
			return
		}
		if want := evSlowRRs("answer", wire); string(fast) != string(want) {
			t.Errorf("fast path %s\nmiekg/dns %s", fast, want)
		}
		var v []any
		if len(fast) > 0 && json.Unmarshal(fast[len(`,"answer":`):], &v) != nil {
			t.Errorf("not JSON: %s", fast)
		}
	})
}
