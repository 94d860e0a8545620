package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// evidence is what the evidence log holds after the run.
type evidence struct {
	hits, missing, dup, unexpected, probes int64 // hit records (sinkd hits), by how they relate to the hits sent
	recordedFailed                         int64 // hit records of queries the load counted failed
	direct                                 int64 // hit records counted by reading the segments
	gaps, lost                             int64
	reloadRecords, starts, stops           int64
	reloadsUnrecorded                      int64 // versions seen live without a reload record naming their sha256
	jsonl, gz                              int   // segments
	unexpectedEx                           []string
}

// countEvidence counts the hit records with `sinkd hits -type all -format
// json` against the hits the load sent, and again straight from the
// segment files.
func countEvidence(bin, cfg, evDir string, gen *loadGen, rl *reloader) (evidence, error) {
	var ev evidence
	cmd := exec.Command(bin, "hits", "-config", cfg, "-type", "all", "-format", "json")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return ev, err
	}
	if err := cmd.Start(); err != nil {
		return ev, err
	}
	seen := make(map[int64]bool)
	recordedSums := make(map[string]bool) // new_sha256 of the list in reload records
	sc := bufio.NewScanner(pipe)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Type    string `json:"type"`
			Qname   string `json:"qname"`
			Lost    int64  `json:"lost"`
			Changed []struct {
				List      string `json:"list"`
				NewSHA256 string `json:"new_sha256"`
			} `json:"changed"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return ev, fmt.Errorf("sinkd hits: %w: %s", err, sc.Bytes())
		}
		switch rec.Type {
		case "gap":
			ev.gaps++
			ev.lost += rec.Lost
		case "reload":
			ev.reloadRecords++
			for _, c := range rec.Changed {
				if c.List == listName {
					recordedSums[c.NewSHA256] = true
				}
			}
		case "start":
			ev.starts++
		case "stop":
			ev.stops++
		case "hit":
			ev.hits++
			n, ok := hitNumber(rec.Qname, gen.hitDomains)
			st, sent := gen.hitState(n)
			switch {
			case !ok && rl.isProbe(rec.Qname):
				ev.probes++
			case !ok || !sent:
				ev.unexpected++
				if len(ev.unexpectedEx) < 5 {
					ev.unexpectedEx = append(ev.unexpectedEx, rec.Qname)
				}
			case seen[n]:
				ev.dup++
			default:
				seen[n] = true
				if st != hitAnswered {
					ev.recordedFailed++
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return ev, fmt.Errorf("sinkd hits: %w", err)
	}
	if err := cmd.Wait(); err != nil {
		return ev, fmt.Errorf("sinkd hits: %w: %s", err, stderr.String())
	}
	for n := range gen.result().hitsSent {
		if st, _ := gen.hitState(n); st == hitAnswered && !seen[n] {
			ev.missing++
		}
	}
	for _, sum := range rl.result().sums {
		if !recordedSums[sum] {
			ev.reloadsUnrecorded++
		}
	}
	ev.direct, ev.jsonl, ev.gz, err = countSegments(evDir)
	return ev, err
}

// hitNumber parses a load hit name, q<N>.<hit domain N>, without the final
// dot.
func hitNumber(qname string, hitDomains []string) (int64, bool) {
	label, rest, ok := strings.Cut(qname, ".")
	if !ok || len(label) < 2 || label[0] != 'q' {
		return 0, false
	}
	n, err := strconv.ParseInt(label[1:], 10, 64)
	if err != nil || n < 0 || rest != hitDomains[n%int64(len(hitDomains))] {
		return 0, false
	}
	return n, true
}

// countSegments counts the hit records in every segment of dir, gzip'ed
// or not, by reading the files.
func countSegments(dir string) (hits int64, jsonl, gz int, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, 0, 0, err
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "hits-") {
			continue
		}
		var r io.Reader
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return 0, 0, 0, err
		}
		r = f
		switch {
		case strings.HasSuffix(name, ".jsonl"):
			jsonl++
		case strings.HasSuffix(name, ".jsonl.gz"):
			gz++
			zr, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
			}
			r = zr
		default:
			f.Close()
			continue
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"type":"hit"`) {
				hits++
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("%s: %w", name, err)
		}
	}
	return hits, jsonl, gz, nil
}

// verify runs `sinkd verify -config cfg`.
func verify(bin, cfg string) (string, error) {
	out, err := exec.Command(bin, "verify", "-config", cfg).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// scanLog collects sinkd's ERROR and WARN log lines.
func scanLog(path string) (errs, warns []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		switch line := sc.Text(); {
		case strings.Contains(line, " level=ERROR "):
			errs = append(errs, line)
		case strings.Contains(line, " level=WARN "):
			warns = append(warns, line)
		}
	}
	return errs, warns, sc.Err()
}
