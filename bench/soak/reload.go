package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/sinkd/sinkd/internal/sinkdproc"
)

// reloader replaces the list with a new version every -reload-every and
// checks that each one goes live.
type reloader struct {
	o            options
	lists        *versions
	hc           *http.Client
	sd           *sinkdproc.Process
	stage, zones string

	mu     sync.Mutex
	took   []time.Duration // rename to live, per reload done
	sums   []string        // sha256 of each version seen live
	failed []string
	probes map[string]bool // names asked by the probes that are hits
}

func (rl *reloader) run(ctx context.Context, start, until time.Time) {
	c := &dns.Client{Timeout: rl.o.timeout}
	for k := 1; ; k++ {
		at := start.Add(time.Duration(k) * rl.o.reloadEvery)
		if !at.Before(until) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(at)):
		}
		if err := rl.reload(ctx, c, k); err != nil {
			rl.mu.Lock()
			rl.failed = append(rl.failed, fmt.Sprintf("version %d: %v", k, err))
			rl.mu.Unlock()
		}
	}
}

// reload renames version k into zones.dir, waits for /api/v1/lists to
// show its sha256, then probes a name it added (blocked) and one it
// removed (answered by the upstream).
func (rl *reloader) reload(ctx context.Context, c *dns.Client, k int) error {
	src := filepath.Join(rl.stage, listName)
	sum, err := rl.lists.write(src, k)
	if err != nil {
		return err
	}
	renamed := time.Now()
	if err := os.Rename(src, filepath.Join(rl.zones, listName)); err != nil {
		return err
	}
	for {
		st, got, err := rl.listStatus()
		if err == nil && got == sum {
			if st != "ok" {
				return fmt.Errorf("/api/v1/lists: status %q", st)
			}
			break
		}
		if time.Since(renamed) > rl.o.reloadTimeout {
			return fmt.Errorf("not live %v after the rename (sha256 %s, /api/v1/lists: %s %v)", rl.o.reloadTimeout, sum, got, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	took := time.Since(renamed)

	set := make(map[string]bool, len(rl.lists.base))
	for _, d := range rl.lists.names(k) {
		set[d] = true
	}
	add := fmt.Sprintf("probe%d.%s.", k, rl.lists.added(k)[0])
	rm := ""
	for _, d := range rl.lists.removed(k) {
		if !blocked(set, d) {
			rm = "probe." + d + "."
			break
		}
	}
	rl.mu.Lock()
	rl.probes[strings.TrimSuffix(add, ".")] = true
	rl.mu.Unlock()
	if got, err := probe(c, rl.sd.DNS, add); err != nil || got != netip.MustParseAddr(sinkholeAddr) {
		return fmt.Errorf("live (sha256 in /api/v1/lists), but %s, added, is answered %v (%v)", add, got, err)
	}
	if rm != "" {
		want, _ := upstreamAnswer(rm)
		if got, err := probe(c, rl.sd.DNS, rm); err != nil || got != want {
			return fmt.Errorf("live (sha256 in /api/v1/lists), but %s, removed, is answered %v (%v), not %v by the upstream", rm, got, err, want)
		}
	}
	rl.mu.Lock()
	rl.took = append(rl.took, took)
	rl.sums = append(rl.sums, sum)
	rl.mu.Unlock()
	return nil
}

// listStatus is the replaced list's status and sha256 in /api/v1/lists.
func (rl *reloader) listStatus() (status, sum string, err error) {
	resp, err := rl.hc.Get("http://" + rl.sd.HTTP + "/api/v1/lists")
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	var lists []struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lists); err != nil {
		return "", "", err
	}
	for _, l := range lists {
		if l.Name == listName {
			return l.Status, l.SHA256, nil
		}
	}
	return "", "", fmt.Errorf("no %s", listName)
}

// probe is the A record sinkd answers for name; an error for a timeout,
// an rcode other than NOERROR or an answer that is not one A record.
func probe(c *dns.Client, server, name string) (netip.Addr, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return netip.Addr{}, err
	}
	if r.Rcode != dns.RcodeSuccess {
		return netip.Addr{}, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	if len(r.Answer) != 1 {
		return netip.Addr{}, fmt.Errorf("%d answer records", len(r.Answer))
	}
	a, ok := r.Answer[0].(*dns.A)
	if !ok {
		return netip.Addr{}, fmt.Errorf("answer %v", r.Answer[0])
	}
	ip, _ := netip.AddrFromSlice(a.A)
	return ip.Unmap(), nil
}

// reloadResult is what the reloader saw.
type reloadResult struct {
	took   []time.Duration
	sums   []string
	failed []string
	probes map[string]bool
}

func (rl *reloader) result() reloadResult {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return reloadResult{took: slices.Clone(rl.took), sums: slices.Clone(rl.sums), failed: slices.Clone(rl.failed), probes: rl.probes}
}

// isProbe reports whether qname (a hit record's) was asked by a probe.
func (rl *reloader) isProbe(qname string) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.probes[qname]
}
