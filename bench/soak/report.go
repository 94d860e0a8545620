package main

import (
	"fmt"
	"io"
	"slices"
	"time"
)

// report is everything the soak found.
type report struct {
	o             options
	gen           genResult
	drops         int64 // at sinkd's DNS socket
	upDrops       int64 // at the fake upstream's socket
	genDrops      int64 // at the load's sockets
	upstreamAsked int64
	reloads       reloadResult
	heap          []sample
	termErr       error
	ev            evidence
	verifyOut     string
	verifyErr     error
	logErrors     []string
	logWarnings   []string
}

// print writes the report and returns whether every check passed.
func (r *report) print(w io.Writer) bool {
	var fails []string
	failIf := func(cond bool, format string, a ...any) {
		if cond {
			fails = append(fails, fmt.Sprintf(format, a...))
		}
	}
	g := r.gen
	fmt.Fprintf(w, "\nqueries: sent %d (%.0f qps over %v), answered %d, failed %d (timed out > %v %d, SERVFAIL or other rcode %d, wrong answer %d, send error %d)\n",
		g.sent, float64(g.sent)/r.o.duration.Seconds(), r.o.duration, g.answered, g.failed(), r.o.timeout, g.timedOut, g.badRcode, g.wrong, g.sendErr)
	fmt.Fprintf(w, "reply times (in time): hits %v; upstream names %v\n", g.lat[1], g.lat[0])
	fmt.Fprintf(w, "replies after the timeout: %d (rcodes %v, the latest %v after its query); kernel drops (UDP receive buffer full): sinkd's socket %d, fake upstream's %d, the load's %d\n",
		g.late, g.lateRcode, g.lateMax.Round(time.Millisecond), r.drops, r.upDrops, r.genDrops)
	for _, e := range g.examples {
		fmt.Fprintln(w, "  failed:", e)
	}
	failIf(g.failed() > 0, "%d failed queries", g.failed())
	failIf(g.answered+g.failed() != g.sent, "answered + failed (%d) != sent (%d)", g.answered+g.failed(), g.sent)
	if g.normalSent > 0 {
		fmt.Fprintf(w, "cache: %d queries for upstream names, the upstream was asked %d times (%.1f%% answered from the cache); %d stale answers\n",
			g.normalSent, r.upstreamAsked, 100*(1-float64(r.upstreamAsked)/float64(g.normalSent)), g.stale)
	}

	ev := r.ev
	fmt.Fprintf(w, "hits: %d hit queries sent, %d answered with the sinkhole (hits sent); %d hit records (sinkd hits -format json): %d of hits sent, missing %d, duplicate %d, not sent by the load %d, of failed queries %d, of reload probes %d\n",
		g.hitsSent, g.hitsAnswered, ev.hits, ev.hits-ev.dup-ev.unexpected-ev.probes-ev.recordedFailed, ev.missing, ev.dup, ev.unexpected, ev.recordedFailed, ev.probes)
	fmt.Fprintf(w, "evidence: %d segments (%d .jsonl, %d .jsonl.gz) hold %d hit records read directly; gap records %d (lost %d); reload records %d (versions seen live without one: %d); start %d, stop %d\n",
		ev.jsonl+ev.gz, ev.jsonl, ev.gz, ev.direct, ev.gaps, ev.lost, ev.reloadRecords, ev.reloadsUnrecorded, ev.starts, ev.stops)
	for _, q := range ev.unexpectedEx {
		fmt.Fprintln(w, "  unexpected hit record:", q)
	}
	recorded := ev.hits - ev.dup - ev.unexpected - ev.probes - ev.recordedFailed
	failIf(recorded != g.hitsAnswered || ev.missing > 0, "hits recorded %d != hits sent (answered with the sinkhole) %d (missing %d)", recorded, g.hitsAnswered, ev.missing)
	failIf(ev.dup > 0 || ev.unexpected > 0, "%d duplicate and %d unexpected hit records", ev.dup, ev.unexpected)
	failIf(ev.direct != ev.hits, "sinkd hits found %d hit records, the segments hold %d", ev.hits, ev.direct)
	failIf(ev.gaps > 0, "%d gap records (%d hits lost)", ev.gaps, ev.lost)
	failIf(ev.stops != 1 || ev.starts != 1, "want 1 start and 1 stop record, have %d and %d", ev.starts, ev.stops)

	took := slices.Clone(r.reloads.took)
	slices.Sort(took)
	want := 0
	if r.o.reloadEvery > 0 {
		want = int((r.o.duration - 1) / r.o.reloadEvery)
	}
	if len(took) > 0 {
		fmt.Fprintf(w, "reloads: %d of %d done and seen live (sha256 in /api/v1/lists, an added name blocked, a removed one not), rename to live median %d ms, max %d ms\n",
			len(took), want, took[len(took)/2].Milliseconds(), took[len(took)-1].Milliseconds())
	} else {
		fmt.Fprintf(w, "reloads: 0 of %d done\n", want)
	}
	for _, f := range r.reloads.failed {
		fmt.Fprintln(w, "  reload failed:", f)
	}
	failIf(len(took) != want, "%d of %d reloads done", len(took), want)
	failIf(ev.reloadRecords < int64(len(took)), "%d reload records for %d reloads", ev.reloadRecords, len(took))
	failIf(ev.reloadsUnrecorded > 0, "%d versions seen live have no reload record with their sha256", ev.reloadsUnrecorded)

	warm, end, top := r.heapFigures()
	if warm.heap > 0 && end.heap > 0 {
		ratio := float64(end.heap) / float64(warm.heap)
		fmt.Fprintf(w, "heap_inuse: after warm-up %s (median of the samples in %v..%v), at end %s (median of the last %v), max %s; end/warm-up %.2fx (limit %.2fx)\n",
			mib(warm.heap), r.o.warmup, r.o.warmup+r.o.heapWindow, mib(end.heap), r.o.heapWindow, mib(top.heap), ratio, r.o.maxGrowth)
		fmt.Fprintf(w, "RSS: after warm-up %s, at end %s, max %s; end/warm-up %.2fx; goroutines: after warm-up %d, at end %d, max %d\n",
			mib(warm.rss), mib(end.rss), mib(top.rss), float64(end.rss)/float64(max(warm.rss, 1)), warm.goroutines, end.goroutines, top.goroutines)
		failIf(ratio > r.o.maxGrowth, "heap at end %.2fx heap after warm-up (limit %.2fx)", ratio, r.o.maxGrowth)
	} else {
		failIf(true, "no heap samples after warm-up or at the end")
	}

	if r.termErr != nil {
		fmt.Fprintln(w, "sinkd: SIGTERM:", r.termErr)
	} else {
		fmt.Fprintln(w, "sinkd: exited 0 after SIGTERM")
	}
	failIf(r.termErr != nil, "sinkd: %v", r.termErr)
	fmt.Fprintf(w, "verify: %s\n", r.verifyOut)
	failIf(r.verifyErr != nil, "sinkd verify: %v", r.verifyErr)
	fmt.Fprintf(w, "sinkd log: %d ERROR, %d WARN lines\n", len(r.logErrors), len(r.logWarnings))
	for i, l := range append(slices.Clip(r.logErrors), r.logWarnings...) {
		if i == 5 {
			fmt.Fprintln(w, "  ...")
			break
		}
		fmt.Fprintln(w, " ", l)
	}
	failIf(len(r.logErrors) > 0, "%d ERROR lines in sinkd's log", len(r.logErrors))

	if len(fails) == 0 {
		fmt.Fprintln(w, "result: PASS")
		return true
	}
	fmt.Fprintln(w, "result: FAIL")
	for _, f := range fails {
		fmt.Fprintln(w, "  -", f)
	}
	return false
}

// heapFigures are the median heap, RSS and goroutines sampled in the
// window after warm-up and in the last window, and the highest after
// warm-up.
func (r *report) heapFigures() (warm, end, top sample) {
	var ws, es []sample
	for _, s := range r.heap {
		if s.at < r.o.warmup {
			continue
		}
		if s.at < r.o.warmup+r.o.heapWindow {
			ws = append(ws, s)
		}
		if s.at > r.o.duration-r.o.heapWindow {
			es = append(es, s)
		}
		top.heap, top.rss, top.goroutines = max(top.heap, s.heap), max(top.rss, s.rss), max(top.goroutines, s.goroutines)
	}
	return medianSample(ws), medianSample(es), top
}

// medianSample is the median of each field of ss (the mean of the middle
// two for an even count); zero for none.
func medianSample(ss []sample) sample {
	med := func(f func(sample) int64) int64 {
		if len(ss) == 0 {
			return 0
		}
		v := make([]int64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		slices.Sort(v)
		n := len(v)
		return (v[(n-1)/2] + v[n/2]) / 2
	}
	return sample{
		heap:       med(func(s sample) int64 { return s.heap }),
		rss:        med(func(s sample) int64 { return s.rss }),
		goroutines: med(func(s sample) int64 { return s.goroutines }),
	}
}
