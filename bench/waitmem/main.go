// Command waitmem measures what a query waiting on upstream costs sinkd in
// memory: it starts the real binary with one upstream that reads every
// query and never answers (on 127.0.0.1), sends -queries distinct names,
// waits until that many queries are waiting (go_goroutines on /metrics),
// and reports go_memstats_heap_inuse_bytes before and while they wait.
//
// Run from the repository root (it builds ./cmd/sinkd unless -sinkd is set):
//
//	go run ./bench/waitmem -queries 4000
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "waitmem:", err)
		os.Exit(1)
	}
}

func run() error {
	queries := flag.Int("queries", 4000, "distinct queries left waiting on the silent upstream")
	bin := flag.String("sinkd", "", "sinkd binary (default: go build ./cmd/sinkd)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "waitmem")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *bin == "" {
		if *bin, err = sinkdproc.Build(dir); err != nil {
			return err
		}
	}

	// The upstream: reads and never answers.
	up, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer up.Close()
	go func() {
		b := make([]byte, 65536)
		for {
			if _, _, err := up.ReadFrom(b); err != nil {
				return
			}
		}
	}()

	cfg := filepath.Join(dir, "sinkd.yaml")
	yaml := fmt.Sprintf(`listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["%s"]
upstream_timeout: 60s
access:
  rate_limit: 0
zones:
  dir: %s
evidence:
  dir: %s
`, up.LocalAddr(), filepath.Join(dir, "zones.d"), filepath.Join(dir, "hits"))
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		return err
	}
	p, err := sinkdproc.Start(*bin, cfg, filepath.Join(dir, "sinkd.log"))
	if err != nil {
		return err
	}
	defer p.Kill()

	hc := &http.Client{Timeout: 5 * time.Second}
	metric := func(name string) (float64, error) {
		b, err := sinkdproc.Scrape(hc, p.HTTP)
		if err != nil {
			return 0, err
		}
		v, ok := sinkdproc.Value(b, name)
		if !ok {
			return 0, fmt.Errorf("no %s on /metrics", name)
		}
		return v, nil
	}
	idleG, err := metric("go_goroutines")
	if err != nil {
		return err
	}
	before, err := metric("go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}

	c, err := net.Dial("udp", p.DNS)
	if err != nil {
		return err
	}
	defer c.Close()
	for i := range *queries {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("w%d.example.", i), dns.TypeA)
		b, _ := m.Pack()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if i%200 == 199 { // stay within the socket buffers
			time.Sleep(5 * time.Millisecond)
		}
	}
	// One goroutine per waiting query: wait until they all are.
	deadline := time.Now().Add(30 * time.Second)
	for {
		g, err := metric("go_goroutines")
		if err != nil {
			return err
		}
		if g-idleG >= float64(*queries) {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("not every query is waiting after 30 s (dropped at a socket?)")
		}
		time.Sleep(50 * time.Millisecond)
	}
	during, err := metric("go_memstats_heap_inuse_bytes")
	if err != nil {
		return err
	}
	fmt.Printf("heap_inuse idle %.1f MiB, with %d queries waiting %.1f MiB: %.1f KiB per waiting query\n",
		before/(1<<20), *queries, during/(1<<20), (during-before)/float64(*queries)/1024)
	return nil
}
