package sinkhole

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// VerifyResult is what Verify found in an intact log.
type VerifyResult struct {
	Records   int64  // records in all segments
	Segments  int    // segments walked
	FinalHash string // the hash of the last record (64 zeros for an empty log)
	// Incomplete is set when the newest segment ends with a line without a
	// newline: being written right now, or torn by a crash (the next start
	// cuts it and writes a gap record). That line is not counted;
	// IncompleteFile and IncompleteLine say where it is.
	Incomplete     bool
	IncompleteFile string
	IncompleteLine int
}

// noteIncomplete records an incomplete last line at file:line (0: none).
func (r *VerifyResult) noteIncomplete(file string, line int) {
	if line > 0 {
		r.Incomplete, r.IncompleteFile, r.IncompleteLine = true, file, line
	}
}

// VerifyError is the first broken link of a chain: FILE:LINE: reason.
type VerifyError struct {
	File   string // the segment's path
	Line   int    // 1-based line in the (decompressed) segment
	Reason string
}

func (e *VerifyError) Error() string { return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Reason }

// evSegCheck is one segment's own check, before segments are linked.
type evSegCheck struct {
	records    int64
	firstSeq   uint64
	firstPrev  string
	lastSeq    uint64
	lastHash   string
	err        *VerifyError
	prunes     []evPruned
	chain      string // the chain named by the last start record seen
	incomplete int    // the line number of an incomplete last line, or 0
}

type evPruned struct {
	lastSeq uint64
	final   string
}

// Verify walks every segment of dir in order (gzip'ed ones too) and checks
// each record's hash (HMAC-SHA-256 with key when key is not nil), its prev
// link and seq+1, across segments. The oldest remaining segment may start
// after pruned ones: its first prev must then be a prune record's
// final_hash. A broken chain is a *VerifyError naming the first broken
// line; other errors are I/O errors.
func Verify(ctx context.Context, dir string, key []byte) (VerifyResult, error) {
	var res VerifyResult
	segs, _, err := evListSegments(dir)
	if err != nil {
		return res, err
	}
	res.Segments = len(segs)
	res.FinalHash = evZeroHash
	checks := make([]evSegCheck, len(segs))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(segs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(segs) || ctx.Err() != nil {
					return
				}
				checks[i] = evCheckSegment(ctx, segs[i], key, i == len(segs)-1)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}

	var prunes []evPruned
	for _, c := range checks {
		prunes = append(prunes, c.prunes...)
	}
	prevSeq, prevHash, prevName := uint64(0), evZeroHash, ""
	chain := ""
	for i, s := range segs {
		c := &checks[i]
		fail := func(line int, reason string) (VerifyResult, error) {
			return res, &VerifyError{File: s.path, Line: line, Reason: evHint(reason, key, chain, c.chain)}
		}
		if c.records == 0 && c.err == nil {
			if i == len(segs)-1 {
				res.Segments--
				res.noteIncomplete(s.path, c.incomplete)
				break
			}
			return fail(1, "empty segment")
		}
		if c.records > 0 {
			switch {
			case i == 0 && c.firstSeq == 1 && c.firstPrev == evZeroHash:
			case i == 0 && evPrunedBefore(prunes, c.firstSeq, c.firstPrev):
			case i == 0 && c.firstPrev == evZeroHash:
				return fail(1, fmt.Sprintf("seq %d, want 1", c.firstSeq))
			case i == 0:
				return fail(1, "prev links to a record that is neither here nor named by a prune record (segments missing?)")
			case c.firstSeq != prevSeq+1:
				return fail(1, fmt.Sprintf("seq %d, want %d: records missing between %s and this segment", c.firstSeq, prevSeq+1, prevName))
			case c.firstPrev != prevHash:
				return fail(1, "prev does not match the last hash of "+prevName)
			}
			if c.firstSeq != s.first && (c.err == nil || c.err.Line > 1) {
				return fail(1, fmt.Sprintf("seq %d, but the file name says %d", c.firstSeq, s.first))
			}
		}
		if c.err != nil {
			c.err.Reason = evHint(c.err.Reason, key, chain, c.chain)
			return res, c.err
		}
		if c.chain != "" {
			chain = c.chain
		}
		res.Records += c.records
		prevSeq, prevHash, prevName = c.lastSeq, c.lastHash, s.name
		res.noteIncomplete(s.path, c.incomplete)
	}
	res.FinalHash = prevHash
	return res, nil
}

// evHint adds why a hash mismatch may be the wrong key rather than
// tampering.
func evHint(reason string, key []byte, chains ...string) string {
	if reason != "hash mismatch" {
		return reason
	}
	for _, c := range chains {
		switch {
		case c == "hmac-sha256" && key == nil:
			return reason + " (the chain is HMAC-SHA-256: verify with -key)"
		case c == "sha256" && key != nil:
			return reason + " (the chain is plain SHA-256: verify without -key)"
		}
	}
	return reason
}

func evPrunedBefore(prunes []evPruned, first uint64, prev string) bool {
	for _, p := range prunes {
		if p.lastSeq+1 == first && p.final == prev {
			return true
		}
	}
	return false
}

// evCheckSegment checks one segment's lines among themselves.
func evCheckSegment(ctx context.Context, s evSeg, key []byte, newest bool) evSegCheck {
	var c evSegCheck
	fail := func(line int, reason string) evSegCheck {
		c.err = &VerifyError{File: s.path, Line: line, Reason: reason}
		return c
	}
	r, err := evOpen(s)
	if err != nil {
		return fail(1, err.Error())
	}
	defer r.Close()
	var h hash.Hash
	if key != nil {
		h = hmac.New(sha256.New, key)
	} else {
		h = sha256.New()
	}
	sum := make([]byte, 0, sha256.Size)
	var want [64]byte
	var lastHash [64]byte
	lines := newEvLines(r, 1<<20)
	for {
		line, complete, ok := lines.next()
		if !ok {
			break
		}
		n := lines.n
		if n&4095 == 0 && ctx.Err() != nil {
			return c
		}
		if !complete {
			if newest && !s.gz {
				c.incomplete = n
				break
			}
			return fail(n, "incomplete last line")
		}
		l, err := evParseLine(line)
		if err != nil {
			return fail(n, err.Error())
		}
		if string(l.typ) == "start" {
			switch {
			case bytes.Contains(line, []byte(`,"chain":"hmac-sha256"`)):
				c.chain = "hmac-sha256"
			case bytes.Contains(line, []byte(`,"chain":"sha256"`)):
				c.chain = "sha256"
			}
		}
		if c.records == 0 {
			c.firstSeq, c.firstPrev = l.seq, string(l.prev)
		} else {
			if l.seq != c.lastSeq+1 {
				return fail(n, fmt.Sprintf("seq %d, want %d", l.seq, c.lastSeq+1))
			}
			if !bytes.Equal(l.prev, lastHash[:]) {
				return fail(n, "prev does not match the hash of the line before")
			}
		}
		h.Reset()
		h.Write(l.prev)
		h.Write(l.body)
		h.Write([]byte{'}'})
		sum = h.Sum(sum[:0])
		hex.Encode(want[:], sum)
		if !bytes.Equal(want[:], l.hash) {
			return fail(n, "hash mismatch")
		}
		if string(l.typ) == "prune" {
			if p, ok := evParsePrune(line); ok {
				c.prunes = append(c.prunes, p)
			}
		}
		copy(lastHash[:], l.hash)
		c.lastSeq = l.seq
		c.records++
	}
	if lines.err != nil {
		return fail(lines.n+1, "read: "+lines.err.Error())
	}
	c.lastHash = string(lastHash[:])
	return c
}

// evParsePrune reads last_seq and final_hash of a prune record.
func evParsePrune(line []byte) (evPruned, bool) {
	var p evPruned
	var f evFields
	if !f.scan(line) {
		return p, false
	}
	n, err := strconv.ParseUint(string(f.get("last_seq")), 10, 64)
	if err != nil {
		return p, false
	}
	p.lastSeq, p.final = n, string(f.get("final_hash"))
	return p, len(p.final) == 64
}
