package zones

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/sinkd/sinkd/internal/synth"
	"github.com/sinkd/sinkd/sinkhole"
)

// synthList writes a deterministic list of domains names and ips
// addresses/CIDRs, one per line, and returns its path.
func synthList(b *testing.B, domains, ips int) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "synth.txt")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := synth.WriteList(w, 1, domains, ips); err != nil {
		b.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkParseFile1M is parse + compile of a 1,000,000-name plain list,
// as a reload does it (target: <= 1 s).
func BenchmarkParseFile1M(b *testing.B) {
	p := synthList(b, 1_000_000, 0)
	fi, err := os.Stat(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(fi.Size())
	b.ReportAllocs()
	for b.Loop() {
		r := ParseFile(p, "synth.txt", sinkhole.ActionSinkhole, 0)
		if r.Status != StatusOK || r.Source.Rules.Domain != 1_000_000 {
			b.Fatalf("status %s, rules %+v: %v", r.Status, r.Source.Rules, r.Err)
		}
	}
}

// nopSink drops rules.
type nopSink struct{}

func (nopSink) domain([]byte, sinkhole.Syntax, string) {}
func (nopSink) prefix(netip.Prefix, string)            {}

// BenchmarkParseOnly1M is the parser's share of BenchmarkParseFile1M:
// reading, hashing excluded, splitting and validating lines.
func BenchmarkParseOnly1M(b *testing.B) {
	p := synthList(b, 1_000_000, 0)
	data, err := os.ReadFile(p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	buf := make([]byte, len(data))
	for b.Loop() {
		copy(buf, data) // names are lower-cased in place
		fp := fileParser{src: &sinkhole.Source{Name: "synth.txt"}, sink: nopSink{}}
		if err := fp.parse(bufio.NewReaderSize(bytes.NewReader(buf), maxLine)); err != nil || fp.rules != 1_000_000 {
			b.Fatalf("rules %d: %v", fp.rules, err)
		}
	}
}

// BenchmarkParseFileMixed is parse + compile of 200,000 names and 100,000
// addresses and CIDRs.
func BenchmarkParseFileMixed(b *testing.B) {
	p := synthList(b, 200_000, 100_000)
	b.ReportAllocs()
	for b.Loop() {
		if r := ParseFile(p, "synth.txt", sinkhole.ActionSinkhole, 0); r.Status != StatusOK {
			b.Fatal(r.Err)
		}
	}
}
