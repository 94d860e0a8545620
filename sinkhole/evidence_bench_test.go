package sinkhole

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// evBenchHits are hit templates as the resolver hands them over: a qname
// hit with its synthesized answer, and a cname hit that also carries the
// withheld upstream reply (a cache entry shared by every hit on it).
func evBenchHits(b *testing.B) []Hit {
	b.Helper()
	qname := *evTestHit(b, evT0(), "192.168.1.10", "www.evil.example")
	cname := qname
	cname.QName, cname.Trigger, cname.Match, cname.Rule = "cdn.example", TriggerCNAME, "tracker.bad.example", "bad.example"
	cname.Answer = evWire(b, "cdn.example", dns.TypeA, 0, "cdn.example. 60 IN A 0.0.0.0")
	cname.Upstream = evWire(b, "cdn.example", dns.TypeA, 0, "cdn.example. 300 IN CNAME tracker.bad.example.",
		"tracker.bad.example. 300 IN A 192.0.2.9")
	return []Hit{qname, cname}
}

// evBenchClients are 1024 on-link clients with MACs.
func evBenchClients() ([]netip.AddrPort, func(netip.Addr) (string, bool)) {
	clients := make([]netip.AddrPort, 1024)
	macs := map[netip.Addr]string{}
	for i := range clients {
		a := netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)})
		clients[i] = netip.AddrPortFrom(a, uint16(30000+i))
		macs[a] = fmt.Sprintf("aa:bb:cc:00:%02x:%02x", i>>8, i&0xff)
	}
	return clients, func(a netip.Addr) (string, bool) { m, ok := macs[a]; return m, ok }
}

// BenchmarkEvidenceWriter measures the writer's sustained throughput: hits
// go through the queue (a blocking send, so none is lost), are encoded,
// hash-chained and written with the default fsync policy (every second),
// and the clock stops once the last one is synced.
func BenchmarkEvidenceWriter(b *testing.B) {
	for _, tc := range []struct {
		name   string
		hmac   bool
		kind   int
		unique int // distinct names (0: one)
	}{{"qname", false, 0, 0}, {"cname", false, 1, 0}, {"qname-hmac", true, 0, 0}, {"qname-100k-names", false, 0, 100_000}} {
		b.Run(tc.name, func(b *testing.B) {
			tmpl := evBenchHits(b)[tc.kind]
			answers := make([][]byte, tc.unique)
			for i := range answers {
				name := fmt.Sprintf("h%d.evil.example", i)
				answers[i] = evWire(b, name, dns.TypeA, 0, name+". 60 IN A 0.0.0.0")
			}
			clients, neigh := evBenchClients()
			cfg := DefaultLogConfig()
			cfg.Dir, cfg.Instance, cfg.Neighbours = b.TempDir(), "bench", neigh
			if tc.hmac {
				cfg.HMACKey = []byte("0123456789abcdef0123456789abcdef")
			}
			l, err := OpenLog(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				h := new(Hit)
				*h = tmpl
				h.Time, h.Client = start.Add(time.Duration(i)), clients[i&1023]
				if tc.unique > 0 {
					h.Answer = answers[i%tc.unique]
				}
				l.hits <- h
			}
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
			if err := l.Close("bench"); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkEvidenceRecordHit is what the query path pays: a non-blocking
// channel send while the writer keeps up ("room"), and the counted drop
// when a flood has filled the queue ("full").
func BenchmarkEvidenceRecordHit(b *testing.B) {
	tmpl := evBenchHits(b)[0]
	b.Run("room", func(b *testing.B) {
		cfg := DefaultLogConfig()
		cfg.Dir, cfg.Neighbours = b.TempDir(), evNoNeighbours
		l, err := OpenLog(cfg, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		hits := make([]Hit, 4096)
		for i := range hits {
			hits[i] = tmpl
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			l.RecordHit(&hits[i&4095]) // the writer only reads them
			if i&4095 == 4095 {
				b.StopTimer()
				_ = l.Sync() // keep the queue from filling: measure the send
				b.StartTimer()
			}
		}
		b.StopTimer()
		_ = l.Close("bench")
	})
	b.Run("full", func(b *testing.B) {
		cfg := DefaultLogConfig()
		cfg.Dir, cfg.Neighbours, cfg.Queue = b.TempDir(), evNoNeighbours, 16
		release := make(chan struct{})
		bf := &evBlockingFile{entered: make(chan struct{}), release: release}
		cfg.openFile = func(name string, flag int, perm os.FileMode) (evFile, error) {
			f, err := os.OpenFile(name, flag, perm)
			bf.File = f
			return bf, err
		}
		l, err := OpenLog(cfg, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		h := tmpl
		l.RecordHit(&h)
		<-bf.entered // the writer is stuck: the queue fills
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			h := tmpl
			for pb.Next() {
				l.RecordHit(&h)
			}
		})
		b.StopTimer()
		close(release)
		_ = l.Close("bench")
	})
}

// BenchmarkEvidenceRead verifies and searches (for one client of 1024) a
// gzip'ed log of 100,000 hits (about 66 MB of JSON in 8 MiB segments).
func BenchmarkEvidenceRead(b *testing.B) {
	const n = 100_000
	dir := evBenchLog(b, n)
	b.Run("verify", func(b *testing.B) {
		for range b.N {
			res, err := Verify(context.Background(), dir, nil)
			if err != nil || res.Records != n+2 {
				b.Fatal(res, err)
			}
		}
		b.ReportMetric(float64((n+2)*b.N)/b.Elapsed().Seconds(), "records/s")
	})
	b.Run("search-client", func(b *testing.B) {
		q := HitQuery{Client: netip.MustParsePrefix("192.168.1.7/32")}
		for range b.N {
			found := 0
			if err := SearchLog(context.Background(), dir, q, func([]byte) error { found++; return nil }); err != nil || found == 0 {
				b.Fatal(found, err)
			}
		}
		b.ReportMetric(float64((n+2)*b.N)/b.Elapsed().Seconds(), "records/s")
	})
}

// evBenchLog writes n hits from 1024 clients, in 8 MiB segments, gzip'ed.
func evBenchLog(b *testing.B, n int) string {
	b.Helper()
	tmpl := evBenchHits(b)
	clients, neigh := evBenchClients()
	cfg := DefaultLogConfig()
	cfg.Dir, cfg.Instance, cfg.Neighbours, cfg.SegmentSize = b.TempDir(), "bench", neigh, 8<<20
	l, err := OpenLog(cfg, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	_ = l.RecordStart(nil)
	start := evT0()
	for i := range n {
		h := new(Hit)
		*h = tmpl[i%2]
		h.Time, h.Client = start.Add(time.Duration(i)*time.Millisecond), clients[i%1024]
		l.hits <- h
	}
	if err := l.Close("bench"); err != nil {
		b.Fatal(err)
	}
	if err := CompressSegments(context.Background(), cfg.Dir); err != nil {
		b.Fatal(err)
	}
	return cfg.Dir
}
