package sinkhole

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestContactLinkedToHit(t *testing.T) {
	clock := newEvClock(evT0())
	cfg := evTestConfig(t, clock)
	l, _ := evOpenLog(t, cfg)

	l.RecordHit(evTestHit(t, clock.Now(), "192.0.2.7", "evil.example"))
	l.RecordHit(evTestHit(t, clock.Now(), "192.0.2.7", "other.example"))
	l.RecordHit(evTestHit(t, clock.Now(), "192.0.2.9", "evil.example"))
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	clock.Add(time.Second)

	tests := []struct {
		name      string
		client    string
		host      string
		wantSeq   uint64
		wantQName string
		wantOK    bool
	}{
		{name: "exact name", client: "192.0.2.7", host: "evil.example", wantSeq: 1, wantQName: "evil.example", wantOK: true},
		{name: "subdomain with port", client: "192.0.2.7", host: "WWW.Evil.Example:8080", wantSeq: 1, wantQName: "evil.example", wantOK: true},
		{name: "unrelated name: newest hit", client: "192.0.2.7", host: "x.test", wantSeq: 2, wantQName: "other.example", wantOK: true},
		{name: "no host: newest hit", client: "192.0.2.7", wantSeq: 2, wantQName: "other.example", wantOK: true},
		{name: "other client", client: "192.0.2.9", host: "evil.example", wantSeq: 3, wantQName: "evil.example", wantOK: true},
		{name: "unknown client", client: "192.0.2.200", host: "evil.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq, qname, list, ok := l.LastHit(netip.MustParseAddr(tc.client), evHostOnly(tc.host))
			if ok != tc.wantOK || seq != tc.wantSeq || qname != tc.wantQName {
				t.Fatalf("LastHit = %d %q %v, want %d %q %v", seq, qname, ok, tc.wantSeq, tc.wantQName, tc.wantOK)
			}
			if ok && list != evMalware.Name {
				t.Fatalf("list = %q, want %q", list, evMalware.Name)
			}
		})
	}

	l.RecordContact(&Contact{
		Time: clock.Now(), Client: netip.MustParseAddrPort("192.0.2.7:50000"), Proto: "tcp",
		Sinkhole: netip.MustParseAddrPort("198.51.100.1:443"), Kind: "tls", Bytes: 517, Duration: 12 * time.Millisecond,
		TLS: &ContactTLS{SNI: "evil.example", ALPN: []string{"h2", "http/1.1"}, Version: "1.3", JA4: "t13d0102h2_aaaaaaaaaaaa_bbbbbbbbbbbb"},
	})
	l.RecordContact(&Contact{
		Time: clock.Now(), Client: netip.MustParseAddrPort("192.0.2.200:50001"), Proto: "tcp",
		Sinkhole: netip.MustParseAddrPort("198.51.100.1:25"), Kind: "raw", Bytes: 3, Raw: []byte("EHL"),
	})
	clock.Add(DefaultCorrelationWindow + time.Second)
	l.RecordContact(&Contact{
		Time: clock.Now(), Client: netip.MustParseAddrPort("192.0.2.7:50002"), Proto: "tcp",
		Sinkhole: netip.MustParseAddrPort("198.51.100.1:80"), Kind: "http",
		HTTP: &ContactHTTP{Method: "GET", Host: "evil.example", Path: "/gate.php", UserAgent: "bot/1"},
	})
	if err := l.Close("test"); err != nil {
		t.Fatal(err)
	}

	lines := evReadAll(t, cfg.Dir)
	recs := evRecords(t, cfg.Dir)
	var contacts []int
	for i, r := range recs {
		if r["type"] == "contact" {
			contacts = append(contacts, i)
		}
	}
	if len(contacts) != 3 {
		t.Fatalf("%d contact records, want 3:\n%v", len(contacts), lines)
	}
	wantKeys := []string{"type", "seq", "ts", "instance", "client", "client_port", "proto", "sinkhole", "sinkhole_port",
		"kind", "bytes", "duration_ms", "hit_seq", "hit_qname", "list", "tls", "prev", "hash"}
	if got := evKeys(t, lines[contacts[0]]); !slices.Equal(got, wantKeys) {
		t.Errorf("tls contact keys = %v, want %v", got, wantKeys)
	}
	tls := recs[contacts[0]]
	if tls["hit_seq"] != float64(1) || tls["hit_qname"] != "evil.example" || tls["duration_ms"] != float64(12) {
		t.Errorf("tls contact = %v", tls)
	}
	if m, _ := tls["tls"].(map[string]any); m["sni"] != "evil.example" || m["version"] != "1.3" {
		t.Errorf("tls member = %v", tls["tls"])
	}
	raw := recs[contacts[1]]
	if raw["raw_hex"] != "45484c" || raw["hit_seq"] != nil {
		t.Errorf("raw contact = %v", raw)
	}
	if late := recs[contacts[2]]; late["hit_seq"] != nil {
		t.Errorf("contact after the window linked: %v", late)
	}
	if m, _ := recs[contacts[2]]["http"].(map[string]any); m["path"] != "/gate.php" || m["user_agent"] != "bot/1" {
		t.Errorf("http member = %v", recs[contacts[2]]["http"])
	}

	res, err := Verify(context.Background(), cfg.Dir, nil)
	if err != nil {
		t.Fatalf("verify with contacts: %v", err)
	}
	if res.Records != int64(len(lines)) {
		t.Errorf("verify: %d records, want %d", res.Records, len(lines))
	}

	var found []string
	err = SearchLog(context.Background(), cfg.Dir, HitQuery{Type: "contact", Name: "evil.example"}, func(line []byte) error {
		found = append(found, string(line))
		return nil
	})
	if err != nil || len(found) != 1 {
		t.Fatalf("search -type contact -name evil.example: %d lines, err %v", len(found), err)
	}
}
