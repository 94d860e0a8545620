package sinkhole

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Segment files: hits-YYYYMMDDTHHMMSSZ-<first seq, 12 digits>.jsonl, and
// .jsonl.gz once closed and compressed.
const (
	evSegPrefix   = "hits-"
	evSegTime     = "20060102T150405Z"
	evSegExt      = ".jsonl"
	evSegGzExt    = ".jsonl.gz"
	evSegNameLen  = len(evSegPrefix) + len(evSegTime) + 1 + 12 // without extension
	evGzipComment = "sinkd-segment"
)

// evSeg is one segment file.
type evSeg struct {
	name  string // base name
	path  string
	first uint64    // seq of its first record (from the name)
	start time.Time // time of its first record, to the second (from the name)
	gz    bool
}

// evSegName names a segment whose first record has seq and ts.
func evSegName(ts time.Time, seq uint64) string {
	b := make([]byte, 0, evSegNameLen+len(evSegExt))
	b = append(b, evSegPrefix...)
	b = ts.UTC().AppendFormat(b, evSegTime)
	b = append(b, '-')
	s := strconv.FormatUint(seq, 10)
	for range 12 - len(s) {
		b = append(b, '0')
	}
	b = append(b, s...)
	return string(append(b, evSegExt...))
}

// evParseSegName parses a segment's file name.
func evParseSegName(name string) (evSeg, bool) {
	s := evSeg{name: name}
	base, ok := strings.CutSuffix(name, evSegGzExt)
	if ok {
		s.gz = true
	} else if base, ok = strings.CutSuffix(name, evSegExt); !ok {
		return s, false
	}
	if len(base) != evSegNameLen || !strings.HasPrefix(base, evSegPrefix) || base[evSegNameLen-13] != '-' {
		return s, false
	}
	t, err := time.Parse(evSegTime, base[len(evSegPrefix):len(evSegPrefix)+len(evSegTime)])
	if err != nil {
		return s, false
	}
	digits := base[evSegNameLen-12:]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return s, false
		}
	}
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil || n == 0 {
		return s, false
	}
	s.first, s.start = n, t
	return s, true
}

// evListSegments lists dir's segments in chain order (by first seq). When
// both X.jsonl and X.jsonl.gz exist (a crash between compressing and
// removing), the .gz is listed and the .jsonl returned in stale.
func evListSegments(dir string) (segs []evSeg, stale []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("sinkhole: evidence: %w", err)
	}
	gz := map[string]bool{}
	for _, e := range ents {
		if s, ok := evParseSegName(e.Name()); ok && s.gz && e.Type().IsRegular() {
			gz[strings.TrimSuffix(s.name, ".gz")] = true
		}
	}
	for _, e := range ents {
		s, ok := evParseSegName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		s.path = filepath.Join(dir, s.name)
		if !s.gz && gz[s.name] {
			stale = append(stale, s.path)
			continue
		}
		segs = append(segs, s)
	}
	slices.SortFunc(segs, func(a, b evSeg) int {
		if a.first != b.first {
			if a.first < b.first {
				return -1
			}
			return 1
		}
		return strings.Compare(a.name, b.name)
	})
	return segs, stale, nil
}

// evLine is a record line taken apart as far as the chain needs.
type evLine struct {
	typ  []byte
	seq  uint64
	ts   []byte // the ts value
	body []byte // the line up to and including prev's closing quote
	prev []byte // 64 hex digits
	hash []byte // 64 hex digits
}

const (
	evPrefixType  = `{"type":"`
	evSuffixPrev  = `,"prev":"`
	evSuffixHash  = `","hash":"`
	evSuffixLen   = len(evSuffixPrev) + 64 + len(evSuffixHash) + 64 + 2
	evTSLen       = len(evTimeLayout)
	evMaxTypeName = 16
)

// Reasons a line is not a record.
var (
	errEvNoType = errors.New(`malformed record: does not start with a "type" member`)
	errEvNoSeq  = errors.New(`malformed record: no "seq" after "type"`)
	errEvNoTS   = errors.New(`malformed record: no "ts" after "seq"`)
	errEvNoHash = errors.New(`malformed record: does not end with "prev" and "hash"`)
)

// evParseLine checks a line's frame: {"type":"T","seq":N,"ts":"...", ...
// ,"prev":"HEX","hash":"HEX"}. The hash itself is checked by the caller.
func evParseLine(line []byte) (evLine, error) {
	var l evLine
	rest, ok := bytes.CutPrefix(line, []byte(evPrefixType))
	if !ok {
		return l, errEvNoType
	}
	i := 0
	for i < len(rest) && i <= evMaxTypeName && 'a' <= rest[i] && rest[i] <= 'z' {
		i++
	}
	if i == 0 || i > evMaxTypeName {
		return l, errEvNoType
	}
	l.typ = rest[:i]
	if rest, ok = bytes.CutPrefix(rest[i:], []byte(`","seq":`)); !ok {
		return l, errEvNoSeq
	}
	i = 0
	for i < len(rest) && '0' <= rest[i] && rest[i] <= '9' {
		if i >= 19 || (i == 1 && rest[0] == '0') {
			return l, errEvNoSeq
		}
		l.seq = l.seq*10 + uint64(rest[i]-'0')
		i++
	}
	if i == 0 {
		return l, errEvNoSeq
	}
	if rest, ok = bytes.CutPrefix(rest[i:], []byte(`,"ts":"`)); !ok || len(rest) < evTSLen+1 || rest[evTSLen] != '"' {
		return l, errEvNoTS
	}
	l.ts = rest[:evTSLen]
	rest = rest[evTSLen+1:]
	if len(rest) < evSuffixLen {
		return l, errEvNoHash
	}
	s := rest[len(rest)-evSuffixLen:]
	if !bytes.HasPrefix(s, []byte(evSuffixPrev)) || !evIsHex(s[9:73]) ||
		!bytes.HasPrefix(s[73:], []byte(evSuffixHash)) || !evIsHex(s[83:147]) || s[147] != '"' || s[148] != '}' {
		return l, errEvNoHash
	}
	l.prev, l.hash = s[9:73], s[83:147]
	l.body = line[:len(line)-75]
	return l, nil
}

func evIsHex(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// evLines reads a segment line by line. Lines are returned without their
// newline and are valid until the next call.
type evLines struct {
	r    *bufio.Reader
	long []byte
	n    int   // line number of the last line returned
	err  error // the read error that ended the lines, if not io.EOF
}

func newEvLines(r io.Reader, size int) *evLines {
	return &evLines{r: bufio.NewReaderSize(r, size)}
}

// next returns the next line; complete is false for a last line without a
// newline. ok is false at the end.
func (l *evLines) next() (line []byte, complete, ok bool) {
	l.long = l.long[:0]
	for {
		b, err := l.r.ReadSlice('\n')
		switch {
		case err == nil:
			l.n++
			if len(l.long) > 0 {
				l.long = append(l.long, b[:len(b)-1]...)
				return l.long, true, true
			}
			return b[:len(b)-1], true, true
		case errors.Is(err, bufio.ErrBufferFull):
			l.long = append(l.long, b...)
			continue
		default:
			if !errors.Is(err, io.EOF) {
				l.err = err
			}
			l.long = append(l.long, b...)
			if len(l.long) == 0 {
				return nil, false, false
			}
			l.n++
			return l.long, false, true
		}
	}
}

// evOpen opens a segment for reading, decompressing .gz ones.
func evOpen(s evSeg) (io.ReadCloser, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	if !s.gz {
		return f, nil
	}
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 256<<10))
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", s.path, err)
	}
	return &evGzReader{Reader: zr, f: f}, nil
}

type evGzReader struct {
	*gzip.Reader
	f *os.File
}

func (g *evGzReader) Close() error {
	err := g.Reader.Close()
	if cerr := g.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// evTail is the end of an uncompressed segment.
type evTail struct {
	last    []byte // the last complete line (nil: none)
	lastOff int64  // its offset
	end     int64  // offset just past the last complete line
	size    int64  // file size; > end when a torn line follows
}

// evReadTail reads the last complete line of an uncompressed segment.
func evReadTail(path string) (evTail, error) {
	var t evTail
	f, err := os.Open(path)
	if err != nil {
		return t, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return t, err
	}
	t.size = st.Size()
	for chunk := int64(64 << 10); ; chunk *= 4 {
		off := max(t.size-chunk, 0)
		buf := make([]byte, t.size-off)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			return t, err
		}
		nl := bytes.LastIndexByte(buf, '\n')
		if nl < 0 {
			if off == 0 {
				return t, nil // no complete line at all
			}
			continue
		}
		t.end = off + int64(nl) + 1
		prev := bytes.LastIndexByte(buf[:nl], '\n')
		if prev < 0 && off > 0 {
			continue // the last line starts before this chunk
		}
		t.last = buf[prev+1 : nl]
		t.lastOff = off + int64(prev+1)
		return t, nil
	}
}

// evSegInfo is what a segment's gzip header remembers of its last record.
type evSegInfo struct {
	lastSeq  uint64
	lastTS   time.Time
	lastHash string
}

func (i evSegInfo) comment() string {
	return fmt.Sprintf("%s last_seq=%d last_ts=%s final_hash=%s", evGzipComment, i.lastSeq,
		i.lastTS.UTC().Format(evTimeLayout), i.lastHash)
}

func parseEvSegInfo(c string) (evSegInfo, bool) {
	var i evSegInfo
	var ts string
	n, err := fmt.Sscanf(c, evGzipComment+" last_seq=%d last_ts=%s final_hash=%s", &i.lastSeq, &ts, &i.lastHash)
	if err != nil || n != 3 {
		return i, false
	}
	if i.lastTS, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return i, false
	}
	return i, true
}

// evSegLast returns what is known of a segment's last record without
// reading it all: the gzip header of a compressed one, the tail of an
// uncompressed one. ok is false when nothing is known.
func evSegLast(s evSeg) (evSegInfo, bool) {
	if s.gz {
		f, err := os.Open(s.path)
		if err != nil {
			return evSegInfo{}, false
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return evSegInfo{}, false
		}
		return parseEvSegInfo(zr.Comment)
	}
	t, err := evReadTail(s.path)
	if err != nil || t.last == nil {
		return evSegInfo{}, false
	}
	return evInfoOf(t.last)
}

// evInfoOf reads seq, ts and hash from a record line.
func evInfoOf(line []byte) (evSegInfo, bool) {
	l, err := evParseLine(line)
	if err != nil {
		return evSegInfo{}, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(l.ts))
	if err != nil {
		return evSegInfo{}, false
	}
	return evSegInfo{lastSeq: l.seq, lastTS: ts, lastHash: string(l.hash)}, true
}

// evScanLast reads a whole segment and returns its last record.
func evScanLast(s evSeg) (evSegInfo, error) {
	r, err := evOpen(s)
	if err != nil {
		return evSegInfo{}, err
	}
	defer r.Close()
	lines := newEvLines(r, 256<<10)
	var last []byte
	for {
		line, complete, ok := lines.next()
		if !ok {
			break
		}
		if complete {
			last = append(last[:0], line...)
		}
	}
	if lines.err != nil {
		return evSegInfo{}, fmt.Errorf("%s: %w", s.path, lines.err)
	}
	info, ok := evInfoOf(last)
	if !ok {
		return info, fmt.Errorf("%s: no record", s.path)
	}
	return info, nil
}

// evSyncDir makes a directory's entries durable.
func evSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
