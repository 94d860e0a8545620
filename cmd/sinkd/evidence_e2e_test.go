package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// hitRecord is what the end-to-end tests read back from `sinkd hits`.
type hitRecord struct {
	Type       string   `json:"type"`
	Seq        int      `json:"seq"`
	Instance   string   `json:"instance"`
	Client     string   `json:"client"`
	ClientPort int      `json:"client_port"`
	Proto      string   `json:"proto"`
	QName      string   `json:"qname"`
	QType      string   `json:"qtype"`
	Trigger    string   `json:"trigger"`
	Match      string   `json:"match"`
	Rule       string   `json:"rule"`
	List       string   `json:"list"`
	ListSHA256 string   `json:"list_sha256"`
	Action     string   `json:"action"`
	Answer     []string `json:"answer"`
	Upstream   []string `json:"upstream"`
	Rcode      string   `json:"rcode"`
	Reason     string   `json:"reason"`
}

// sinkdCmd runs the binary and returns stdout, stderr and the exit code.
func sinkdCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(sinkdBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

func parseHits(t *testing.T, out string) []hitRecord {
	t.Helper()
	var recs []hitRecord
	for line := range strings.Lines(out) {
		var r hitRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("sinkd hits -format json printed %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func TestEvidenceEndToEnd(t *testing.T) {
	t.Parallel()
	up := fakeUpstream(t,
		"good.example. 300 IN A 192.0.2.10",
		"www.evil.example. 300 IN A 192.0.2.66",
		"cdn.example. 300 IN CNAME tracker.bad-cname.example.",
		"tracker.bad-cname.example. 300 IN A 192.0.2.12",
		"pointer.example. 300 IN A 203.0.113.45",
	)
	in := startSinkd(t, `
instance: e2e-1
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["`+up+`"]
zones:
  dir: ZONES
evidence:
  dir: HITS
  fsync_interval: 100ms
  segment_size: 1MiB
sinkhole:
  ipv4: 192.0.2.254
`, map[string]string{
		"malware.txt": "evil.example\nbad-cname.example\n203.0.113.0/24 ; test net\n",
	})
	cfg := filepath.Join(in.dir, "sinkd.yaml")
	hitsDir := filepath.Join(in.dir, "hits")

	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"www.evil.example", dns.TypeA}, {"cdn.example", dns.TypeA}, {"pointer.example", dns.TypeA}, {"good.example", dns.TypeA}} {
		in.ask(t, q.name, q.qtype)
	}

	// The hits reach the log off the query path: poll until they are there.
	var recs []hitRecord
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, errOut, code := sinkdCmd(t, "hits", "-config", cfg, "-format", "json")
		if code != 0 {
			t.Fatalf("sinkd hits: exit %d: %s", code, errOut)
		}
		if recs = parseHits(t, out); len(recs) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(recs) != 3 {
		t.Fatalf("sinkd hits found %d hits, want 3: %+v", len(recs), recs)
	}
	want := []hitRecord{
		{Type: "hit", Seq: 2, Instance: "e2e-1", Client: "127.0.0.1", Proto: "udp", QName: "www.evil.example", QType: "A",
			Trigger: "qname", Match: "www.evil.example", Rule: "evil.example", List: "malware.txt", Action: "sinkhole",
			Answer: []string{"www.evil.example. 60 IN A 192.0.2.254"}, Rcode: "NOERROR"},
		{Type: "hit", Seq: 3, Instance: "e2e-1", Client: "127.0.0.1", Proto: "udp", QName: "cdn.example", QType: "A",
			Trigger: "cname", Match: "tracker.bad-cname.example", Rule: "bad-cname.example", List: "malware.txt", Action: "sinkhole",
			Answer:   []string{"cdn.example. 60 IN A 192.0.2.254"},
			Upstream: []string{"cdn.example. 300 IN CNAME tracker.bad-cname.example.", "tracker.bad-cname.example. 300 IN A 192.0.2.12"},
			Rcode:    "NOERROR"},
		{Type: "hit", Seq: 4, Instance: "e2e-1", Client: "127.0.0.1", Proto: "udp", QName: "pointer.example", QType: "A",
			Trigger: "ip", Match: "203.0.113.45", Rule: "203.0.113.0/24", List: "malware.txt", Action: "sinkhole",
			Answer:   []string{"pointer.example. 60 IN A 192.0.2.254"},
			Upstream: []string{"pointer.example. 300 IN A 203.0.113.45"}, Rcode: "NOERROR"},
	}
	for i, r := range recs {
		if r.ClientPort == 0 || len(r.ListSHA256) != 64 {
			t.Errorf("hit %d: client_port %d, list_sha256 %q", i, r.ClientPort, r.ListSHA256)
		}
		r.ClientPort, r.ListSHA256 = 0, ""
		if !evEqual(r, want[i]) {
			t.Errorf("hit %d:\n got %+v\nwant %+v", i, r, want[i])
		}
	}

	// Filters, and the HTTP API, find exactly those hits.
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{args: []string{"-client", "127.0.0.1", "-name", "evil.example"}, want: []string{"www.evil.example"}},
		{args: []string{"-client", "10.0.0.0/8"}, want: nil},
		{args: []string{"-trigger", "cname"}, want: []string{"cdn.example"}},
		{args: []string{"-list", "malware.txt", "-limit", "2"}, want: []string{"cdn.example", "pointer.example"}},
		{args: []string{"-since", "1h"}, want: []string{"www.evil.example", "cdn.example", "pointer.example"}},
		{args: []string{"-until", "1h"}, want: nil},
	} {
		out, errOut, code := sinkdCmd(t, append([]string{"hits", "-dir", hitsDir, "-format", "json"}, tt.args...)...)
		var got []string
		for _, r := range parseHits(t, out) {
			got = append(got, r.QName)
		}
		if code != 0 || !slices.Equal(got, tt.want) {
			t.Errorf("sinkd hits %v: exit %d, %v, want %v (%s)", tt.args, code, got, tt.want, errOut)
		}
	}
	var api []hitRecord
	if err := json.Unmarshal([]byte(httpBody(t, "http://"+in.http+"/api/v1/hits?client=127.0.0.1&name=example&limit=1")), &api); err != nil {
		t.Fatal(err)
	}
	if len(api) != 1 || api[0].QName != "pointer.example" {
		t.Errorf("/api/v1/hits = %+v, want the newest hit", api)
	}
	out, _, code := sinkdCmd(t, "hits", "-dir", hitsDir, "-format", "csv", "-trigger", "ip")
	if code != 0 || !strings.HasPrefix(out, "type,seq,ts,instance,client,client_port,mac,host,proto,qname,qtype,trigger,match,rule,list,list_sha256,action,answer,upstream\nhit,4,") ||
		!strings.Contains(out, ",pointer.example. 60 IN A 192.0.2.254,pointer.example. 300 IN A 203.0.113.45\n") {
		t.Errorf("csv: exit %d\n%s", code, out)
	}
	out, _, code = sinkdCmd(t, "hits", "-dir", hitsDir)
	if code != 0 || !strings.HasPrefix(out, "TIME ") || strings.Count(out, "\n") != 4 || !strings.Contains(out, " cdn.example ") {
		t.Errorf("table: exit %d\n%s", code, out)
	}
	out, _, code = sinkdCmd(t, "hits", "-dir", hitsDir, "-summary")
	if code != 0 || !regexp.MustCompile(`(?m)^127\.0\.0\.1\s+\S+\s+\S+\s+3\s+3$`).MatchString(out) {
		t.Errorf("summary: exit %d\n%s", code, out)
	}
	if _, errOut, code := sinkdCmd(t, "hits", "-dir", hitsDir, "-name", "nothing.example"); code != 0 {
		t.Errorf("no match: exit %d, want 0 (%s)", code, errOut)
	}
	if _, _, code := sinkdCmd(t, "hits", "-dir", hitsDir, "-since", "yesterday"); code != 2 {
		t.Errorf("bad -since: exit %d, want 2", code)
	}

	in.stop(t) // SIGTERM: a stop record, then the chain verifies
	out, _, code = sinkdCmd(t, "hits", "-dir", hitsDir, "-type", "all", "-format", "json")
	all := parseHits(t, out)
	if code != 0 || len(all) != 5 || all[0].Type != "start" || all[4].Type != "stop" || all[4].Reason != "terminated signal received" {
		t.Errorf("all records: %+v", all)
	}
	out, errOut, code := sinkdCmd(t, "verify", "-config", cfg)
	if code != 0 || !regexp.MustCompile(`^ok: 5 records in 1 segments, final hash [0-9a-f]{64}\n$`).MatchString(out) {
		t.Errorf("verify: exit %d: %q %s", code, out, errOut)
	}

	// One flipped byte: verify names the file and line, exit 1.
	segs, _ := filepath.Glob(filepath.Join(hitsDir, "hits-*.jsonl"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.Replace(string(b), `"qname":"cdn.example"`, `"qname":"cdn.exampl3"`, 1))
	if err := os.WriteFile(segs[0], b, 0o640); err != nil {
		t.Fatal(err)
	}
	out, _, code = sinkdCmd(t, "verify", "-dir", hitsDir)
	if code != 1 || out != segs[0]+":3: hash mismatch\n" {
		t.Errorf("verify after tampering: exit %d, %q", code, out)
	}
}

func evEqual(a, b hitRecord) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestEvidenceConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(strings.Repeat("k", 40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("too short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		yaml    string
		check   func(c *config) bool
		wantErr string
	}{
		{name: "defaults", yaml: "", check: func(c *config) bool {
			e := c.evidence
			return e.Dir == "./data/hits" && e.FsyncInterval == time.Second && e.SegmentSize == 64<<20 &&
				e.Retention == 400*24*time.Hour && e.Queue == 65536 && e.HMACKey == nil && e.DHCPLeases == ""
		}},
		{name: "sizes and durations", yaml: "evidence:\n  segment_size: 512KiB\n  fsync_interval: 250ms\n  retention: 30d\n  queue: 100\n  dhcp_leases: /var/lib/misc/dnsmasq.leases\n",
			check: func(c *config) bool {
				e := c.evidence
				return e.SegmentSize == 512<<10 && e.FsyncInterval == 250*time.Millisecond && e.Retention == 30*24*time.Hour &&
					e.Queue == 100 && e.DHCPLeases == "/var/lib/misc/dnsmasq.leases"
			}},
		{name: "bytes", yaml: "evidence:\n  segment_size: 1048576\n", check: func(c *config) bool { return c.evidence.SegmentSize == 1<<20 }},
		{name: "GiB", yaml: "evidence:\n  segment_size: 2GiB\n", check: func(c *config) bool { return c.evidence.SegmentSize == 2<<30 }},
		{name: "key", yaml: "evidence:\n  hmac_key_file: " + key + "\n", check: func(c *config) bool { return string(c.evidence.HMACKey) == strings.Repeat("k", 40) }},
		{name: "short key", yaml: "evidence:\n  hmac_key_file: " + short + "\n", wantErr: "shorter than 32 bytes"},
		{name: "bad size", yaml: "evidence:\n  segment_size: 64MB\n", wantErr: `line 2: invalid size "64MB"`},
		{name: "tiny segment", yaml: "evidence:\n  segment_size: 100\n", wantErr: "segment_size"},
		{name: "zero queue", yaml: "evidence:\n  queue: 0\n", wantErr: "queue"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c *config
			var err error
			if tt.yaml == "" {
				c, err = loadConfig("", "") // no file: the defaults
			} else {
				c, err = loadYAML(t, tt.yaml)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("evidence config %+v", c.evidence)
			}
		})
	}
}

func TestVerifyAndHitsUsage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tt := range []struct {
		args     []string
		wantCode int
		wantOut  string
	}{
		{args: []string{"verify", "-dir", dir}, wantCode: 0, wantOut: "ok: 0 records in 0 segments, final hash " + strings.Repeat("0", 64) + "\n"},
		{args: []string{"verify", "-dir", filepath.Join(dir, "missing")}, wantCode: 1},
		{args: []string{"verify", "extra"}, wantCode: 2},
		{args: []string{"hits", "-dir", dir}, wantCode: 0},
		{args: []string{"hits", "-dir", dir, "-format", "xml"}, wantCode: 2},
		{args: []string{"hits", "-dir", dir, "-type", "hits"}, wantCode: 2},
		{args: []string{"hits", "-dir", dir, "-summary", "-follow"}, wantCode: 2},
		{args: []string{"hits", "-dir", dir, "-client", "not-an-ip"}, wantCode: 2},
	} {
		out, errOut, code := sinkdCmd(t, tt.args...)
		if code != tt.wantCode || tt.wantOut != "" && out != tt.wantOut {
			t.Errorf("sinkd %v: exit %d %q %q, want %d %q", tt.args, code, out, errOut, tt.wantCode, tt.wantOut)
		}
	}
}

func TestDocumentedEvidenceConfig(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("../../configs/sinkd.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	d, err := buildConfig(defaultFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.evidence) != fmt.Sprint(d.evidence) {
		t.Errorf("configs/sinkd.yaml evidence differs from the defaults:\n%+v\n%+v", c.evidence, d.evidence)
	}
}
