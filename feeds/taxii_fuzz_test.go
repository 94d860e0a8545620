package feeds

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sinkd/sinkd/zones"
)

// FuzzTAXII feeds two TAXII 2.1 envelope pages to the decoding path of a
// poll and checks the incremental contract: the feed file written after the
// first page, read back as the next poll does, holds exactly the
// indicators (by id) and lines written; and the second page applied to
// that re-read set writes the same file as applied to the set in memory.
// Every line written is one rule line as package zones counts it.
func FuzzTAXII(f *testing.F) {
	ind := `{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-01-01T00:00:00.000Z","modified":"2024-01-01T00:00:00.000Z","name":"C2 domain","indicator_types":["malicious-activity"],"pattern_type":"stix","pattern":"[domain-name:value = 'c2.evil.example' OR ipv4-addr:value = '203.0.113.0/24']","valid_from":"2024-01-01T00:00:00Z"}`
	revoked := `{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","revoked":true,"pattern_type":"stix","pattern":"[domain-name:value = 'c2.evil.example']"}`
	f.Add([]byte(`{"more":true,"next":"p2","objects":[`+ind+`,{"type":"malware","id":"malware--1","name":"x"}]}`),
		[]byte(`{"more":false,"objects":[`+revoked+`,{"type":"indicator","id":"indicator--2","pattern_type":"stix","pattern":"[url:value = 'http://[2001:db8::1]:8080/x']","valid_until":"2099-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"more":false,"next":12,"objects":null}`), []byte(`{"objects":[]}`))
	if b, err := os.ReadFile(filepath.Join("testdata", "stix-c2-ip.json")); err == nil {
		f.Add(b, []byte(`{"more":false}`))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, page1, page2 []byte) {
		mem := newIndicatorSet()
		if _, _, err := mem.addPage(bytes.NewReader(page1), now); err != nil {
			return
		}
		path := filepath.Join(dir, "tx.txt")
		first := writeSet(t, mem)
		if err := os.WriteFile(path, []byte("# sinkd: action=sinkhole\n# feed: tx\n"+first), 0o600); err != nil {
			t.Fatal(err)
		}
		file := newIndicatorSet()
		if err := file.readFile(path); err != nil {
			t.Fatalf("re-reading the feed file: %v\n%s", err, first)
		}
		// The file holds the written lines of each indicator, nothing else.
		want := map[string][]string{}
		for _, id := range mem.order {
			for _, l := range mem.lines[id] {
				if n, _ := zones.LineRules([]byte(l)); n > 0 {
					want[id] = append(want[id], strings.TrimSpace(l))
				}
			}
		}
		for id, lines := range file.lines {
			if !slices.Equal(lines, want[id]) {
				t.Fatalf("indicator %q: file has %q, wrote %q", id, lines, want[id])
			}
		}
		for id, lines := range want {
			if !slices.Equal(file.lines[id], lines) {
				t.Fatalf("indicator %q: wrote %q, file has %q", id, lines, file.lines[id])
			}
		}
		// The next poll gives the same file whether the set came from
		// memory or from the file.
		if _, _, err := mem.addPage(bytes.NewReader(page2), now); err != nil {
			return
		}
		if _, _, err := file.addPage(bytes.NewReader(page2), now); err != nil {
			t.Fatal(err)
		}
		if a, b := writeSet(t, mem), writeSet(t, file); a != b {
			t.Fatalf("second poll from memory:\n%s\nfrom the file:\n%s", a, b)
		}
	})
}

// writeSet writes s as a poll does and checks every line is a rule line.
func writeSet(t *testing.T, s *indicatorSet) string {
	t.Helper()
	var out bytes.Buffer
	lw := &lineWriter{w: bufio.NewWriter(&out)}
	if err := s.write(lw); err != nil {
		t.Fatal(err)
	}
	if err := lw.w.Flush(); err != nil {
		t.Fatal(err)
	}
	checkLines(t, out.String(), lw.rules)
	for l := range strings.Lines(out.String()) {
		if n, _ := zones.LineRules([]byte(l)); n != 1 {
			t.Fatalf("line %q holds %d rules, want 1", l, n)
		}
	}
	return out.String()
}
