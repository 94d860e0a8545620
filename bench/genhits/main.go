// Command genhits writes a synthetic evidence log through sinkd's real
// writer (hash chain, segments, gzip), for timing `sinkd verify` and
// `sinkd hits`:
//
//	go run ./bench/genhits -dir /tmp/hits1m -n 1000000
//	time sinkd verify -dir /tmp/hits1m
//	time sinkd hits -dir /tmp/hits1m -client 10.0.3.7
//
// Hits come from -clients clients (10.0.x.y, half of them with a MAC) over
// -days days ending now: 80% qname hits, 15% cname hits and 5% ip hits
// (both with the withheld upstream records). It prints the writer's
// throughput.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/sinkhole"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("genhits", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "evidence directory to write (must not hold a log yet)")
	n := fs.Int("n", 1_000_000, "number of hits")
	clients := fs.Int("clients", 1000, "number of distinct clients (at most 65536)")
	days := fs.Int("days", 7, "the hits span this many days, ending now")
	segment := fs.Int64("segment", sinkhole.DefaultSegmentSize, "segment size in bytes")
	keyFile := fs.String("key", "", "HMAC key file (default: a SHA-256 chain)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dir == "" || fs.NArg() > 0 || *n < 1 || *clients < 1 || *clients > 65536 || *days < 1 {
		fs.Usage()
		return 2
	}
	if err := generate(*dir, *n, *clients, *days, *segment, *keyFile, stdout); err != nil {
		fmt.Fprintln(stderr, "genhits:", err)
		return 1
	}
	return 0
}

func generate(dir string, n, nclients, days int, segment int64, keyFile string, stdout io.Writer) error {
	if segs, _ := filepath.Glob(filepath.Join(dir, "hits-*")); len(segs) > 0 {
		return fmt.Errorf("%s already holds a log", dir)
	}
	end := time.Now().UTC()
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	step := end.Sub(start) / time.Duration(n)
	var now atomic.Int64
	now.Store(start.UnixNano())

	clients := make([]netip.AddrPort, nclients)
	macs := map[netip.Addr]string{}
	for i := range clients {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		clients[i] = netip.AddrPortFrom(a, uint16(20000+i))
		if i%2 == 0 {
			macs[a] = fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)
		}
	}
	cfg := sinkhole.DefaultLogConfig()
	cfg.Dir, cfg.Instance, cfg.Version, cfg.SegmentSize = dir, "genhits", "genhits", segment
	cfg.Now = func() time.Time { return time.Unix(0, now.Load()).UTC() }
	cfg.Neighbours = func(a netip.Addr) (string, bool) { m, ok := macs[a]; return m, ok }
	if keyFile != "" {
		key, err := sinkhole.ReadHMACKey(keyFile)
		if err != nil {
			return err
		}
		cfg.HMACKey = key
	}
	l, err := sinkhole.OpenLog(cfg, nil, nil)
	if err != nil {
		return err
	}
	malware := &sinkhole.Source{Name: "malware.txt", SHA256: strings.Repeat("ab", 32), Category: "malware"}
	feed := &sinkhole.Source{Name: "feeds/urlhaus.txt", SHA256: strings.Repeat("cd", 32)}
	if err := l.RecordStart([]sinkhole.ReloadSource{{List: malware.Name, SHA256: malware.SHA256, Status: "ok", Rules: 5000},
		{List: feed.Name, SHA256: feed.SHA256, Status: "ok", Rules: 100}}); err != nil {
		return err
	}

	// 5000 names, each with its synthesized answer and (cname, ip) the
	// upstream reply, packed once like the resolver's cache entries.
	names := make([]sinkhole.Hit, 5000)
	for i := range names {
		qname := fmt.Sprintf("host%d.evil%d.example", i%7, i)
		h := sinkhole.Hit{Proto: "udp", QName: qname, QType: dns.TypeA, Trigger: sinkhole.TriggerQName, Match: qname,
			Rule: fmt.Sprintf("evil%d.example", i), List: malware, Action: sinkhole.ActionSinkhole,
			Answer: pack(qname, qname+". 60 IN A 0.0.0.0"), Rcode: dns.RcodeSuccess}
		switch {
		case i%20 < 3: // cname
			target := fmt.Sprintf("t%d.tracker.example", i)
			h.Trigger, h.Match, h.Rule, h.List = sinkhole.TriggerCNAME, target, "tracker.example", feed
			h.Upstream = pack(qname, qname+". 300 IN CNAME "+target+".", target+". 300 IN A 192.0.2.7")
		case i%20 == 3: // ip
			h.Trigger, h.Match, h.Rule = sinkhole.TriggerIP, "203.0.113.45", "203.0.113.0/24"
			h.Upstream = pack(qname, qname+". 300 IN A 203.0.113.45")
		}
		names[i] = h
	}

	began := time.Now()
	for i := range n {
		t := start.Add(time.Duration(i) * step)
		now.Store(t.UnixNano())
		h := new(sinkhole.Hit)
		*h = names[(i*7919)%len(names)]
		h.Time, h.Client = t, clients[(i*31)%nclients]
		l.RecordHit(h)
		if i%20000 == 19999 {
			if err := l.Sync(); err != nil { // never outrun the queue: no hit is lost
				return err
			}
		}
	}
	if err := l.Close("genhits done"); err != nil {
		return err
	}
	wrote := time.Since(began)
	if err := sinkhole.CompressSegments(context.Background(), dir); err != nil {
		return err
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "hits-*"))
	var size int64
	for _, s := range segs {
		if st, err := os.Stat(s); err == nil {
			size += st.Size()
		}
	}
	fmt.Fprintf(stdout, "%d hits in %v (%.0f records/s, writer incl. background gzip), %d segments, %.1f MB on disk\n",
		n, wrote.Round(time.Millisecond), float64(n)/wrote.Seconds(), len(segs), float64(size)/1e6)
	return nil
}

func pack(qname string, rrs ...string) []byte {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(qname), dns.TypeA)
	m.Response = true
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		m.Answer = append(m.Answer, rr)
	}
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}
