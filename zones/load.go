package zones

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// Errors a list file fails with. A Result's Err is a *FileError that
// wraps one of them (or, for an unreadable file, the os error).
var (
	// ErrBinary means the file holds a NUL byte: it is not a list.
	ErrBinary = errors.New("zones: binary file")
	// ErrRPZ means the file is an RPZ zone file (.rpz, .zone), which is not
	// supported yet; it is never read as a list.
	ErrRPZ = errors.New("zones: RPZ not supported yet")
	// ErrNoRules means a non-empty file has lines but not one valid rule.
	ErrNoRules = errors.New("zones: no valid rules")
	// ErrDirective means the first-line directive has an unknown key or
	// action.
	ErrDirective = errors.New("zones: invalid directive")
	// ErrNotRegular means the path is a directory, device, pipe or socket.
	ErrNotRegular = errors.New("zones: not a regular file")
)

// Result statuses.
const (
	StatusOK           = "ok"             // parsed, rules compiled
	StatusFailed       = "failed"         // no rules from this file
	StatusKeptLastGood = "kept-last-good" // this version failed, the previous one is in force
)

// maxLine is the longest line parsed; longer lines are skipped as "line
// too long". It is also the read buffer size.
const maxLine = 64 << 10

// maxErrors is how many entries a Source's Errors hold: the first skipped
// lines, or for a failed file its reason and the first skipped lines.
const maxErrors = 5

// Result is the outcome of parsing one list file.
type Result struct {
	Source *sinkhole.Source // always set: name, path, counts, errors
	Rules  *sinkhole.Rules  // nil when the file failed
	Status string           // StatusOK, StatusFailed or StatusKeptLastGood
	Err    error            // why the file failed: a *FileError
	Took   time.Duration    // parse + compile time
}

// FileError is why a list file failed. Its message is what `sinkd check`
// prints: "FILE:LINE: reason", or "FILE: reason" when no line is to blame.
type FileError struct {
	File   string // the source name
	Line   int    // 1-based; 0 for the whole file
	Reason string
	Err    error // a sentinel of this package, or the os error
}

// Error returns "FILE:LINE: reason" or "FILE: reason".
func (e *FileError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
	}
	return e.File + ": " + e.Reason
}

// Unwrap returns the sentinel or os error, for errors.Is.
func (e *FileError) Unwrap() error { return e.Err }

// ParseFile parses and compiles one list file. name is its path relative to
// zones.dir with forward slashes (or the path as given to `sinkd check`);
// it names the Source and decides whether the file is an allowlist (a
// directory component "allow", or a base name holding ".allow") or an RPZ
// zone (.rpz, .zone). def is the action of files without a directive.
//
// The file is read once, streaming: it is hashed while it is parsed.
func ParseFile(path, name string, def sinkhole.Action) Result {
	start := time.Now()
	src := &sinkhole.Source{
		Name:     name,
		Path:     path,
		Action:   def,
		Allow:    isAllow(name),
		LoadedAt: start,
	}
	res := Result{Source: src, Status: StatusFailed}
	res.Err = parseFile(&res)
	if res.Err != nil {
		res.Rules = nil
		res.Status = StatusFailed
		// The reason first, then the first skipped lines: at most
		// maxErrors in all.
		src.Errors = append([]string{res.Err.Error()}, src.Errors[:min(len(src.Errors), maxErrors-1)]...)
	} else {
		res.Status = StatusOK
	}
	res.Took = time.Since(start)
	return res
}

// parseFile fills res; it returns why the file failed.
func parseFile(res *Result) error {
	src := res.Source
	fail := func(line int, reason string, err error) error {
		return &FileError{File: src.Name, Line: line, Reason: reason, Err: err}
	}
	fi, err := os.Stat(src.Path)
	if err != nil {
		return fail(0, "cannot read: "+errText(err), err)
	}
	if !fi.Mode().IsRegular() {
		what := "not a regular file"
		if fi.IsDir() {
			what = "is a directory"
		}
		return fail(0, what, ErrNotRegular)
	}
	f, err := os.Open(src.Path)
	if err != nil {
		return fail(0, "cannot read: "+errText(err), err)
	}
	defer f.Close()
	h := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(f, h), maxLine)
	hashed := func() error {
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fail(0, "cannot read: "+errText(err), err)
		}
		src.SHA256 = hex.EncodeToString(h.Sum(nil))
		return nil
	}
	if isRPZ(src.Name) {
		if err := hashed(); err != nil {
			return err
		}
		return fail(0, "RPZ not supported yet", ErrRPZ)
	}

	b := sinkhole.NewBuilder(src)
	bs := newBuilderSink(b)
	p := fileParser{src: src, sink: bs}
	perr := p.parse(br)
	bs.flush()
	src.Format = p.formats.String()
	src.Skipped = p.skipped
	src.Errors = p.errs
	if perr != nil {
		// Hash the whole file even so: the Source names the version that
		// failed.
		if err := hashed(); err != nil {
			return err
		}
		return perr
	}
	src.SHA256 = hex.EncodeToString(h.Sum(nil))
	if p.rules == 0 && p.skipped > 0 {
		return fail(0, fmt.Sprintf("no valid rules (%d lines skipped)", p.skipped), ErrNoRules)
	}
	res.Rules = b.Build()
	return nil
}

// errText is an os error's text without the path it repeats.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// fileParser parses one file's lines.
type fileParser struct {
	src     *sinkhole.Source
	sink    sink
	formats format
	rules   int // rules handed to the sink, duplicates included
	skipped int
	errs    []string
}

// parse reads r to its end or to the first error that fails the file: a
// NUL byte, a bad directive, or a read error.
func (p *fileParser) parse(r *bufio.Reader) error {
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Skip the rest of the line, still looking for NUL bytes.
			binary := bytes.IndexByte(line, 0) >= 0
			for err == bufio.ErrBufferFull {
				line, err = r.ReadSlice('\n')
				binary = binary || bytes.IndexByte(line, 0) >= 0
			}
			if binary {
				return p.fail(n, "binary file", ErrBinary)
			}
			p.skip(n, whyLineLong, nil)
			line = nil
		}
		if err != nil && err != io.EOF {
			return p.fail(n, "cannot read: "+errText(err), err)
		}
		if len(line) > 0 {
			if bytes.IndexByte(line, 0) >= 0 {
				return p.fail(n, "binary file", ErrBinary)
			}
			if n == 1 {
				line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 BOM
				if d, ok := directive(line); ok {
					if err := p.directive(d); err != nil {
						return err
					}
					continue
				}
			}
			r := parseLine(line, p.sink)
			p.formats |= r.f
			p.rules += r.rules
			if r.why != "" {
				p.skip(n, r.why, r.tok)
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

func (p *fileParser) fail(n int, reason string, err error) error {
	return &FileError{File: p.src.Name, Line: n, Reason: reason, Err: err}
}

// skip counts a skipped line and keeps the first few reasons.
func (p *fileParser) skip(n int, why string, tok []byte) {
	p.skipped++
	if len(p.errs) >= maxErrors {
		return
	}
	msg := fmt.Sprintf("%s:%d: %s", p.src.Name, n, why)
	if len(tok) > 0 {
		if len(tok) > 80 {
			tok = append(tok[:77:77], "..."...)
		}
		msg += fmt.Sprintf(" %q", tok)
	}
	p.errs = append(p.errs, msg)
}

// directive returns the fields of a first-line directive
// ("# sinkd: action=nxdomain category=phishing").
func directive(line []byte) ([]byte, bool) {
	line = trimSpace(line)
	if len(line) == 0 || line[0] != '#' {
		return nil, false
	}
	line = trimSpace(line[1:])
	rest, ok := bytes.CutPrefix(line, []byte("sinkd:"))
	return trimSpace(rest), ok
}

// directive applies the fields of a first-line directive.
func (p *fileParser) directive(d []byte) error {
	for _, f := range strings.Fields(string(d)) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "action":
			a, err := sinkhole.ParseAction(strings.ToLower(v))
			if err != nil {
				return p.fail(1, fmt.Sprintf("unknown action %q", v), ErrDirective)
			}
			p.src.Action = a
		case "category":
			p.src.Category = v
		default:
			return p.fail(1, fmt.Sprintf("unknown key %q", k), ErrDirective)
		}
	}
	return nil
}

// isAllow reports whether the list named name is an allowlist: it sits
// under a directory "allow" or its base name holds ".allow"
// (corp.allow.txt, x.allowlist).
func isAllow(name string) bool {
	name = filepath.ToSlash(name)
	dir, base := path.Split(name)
	return strings.Contains(base, ".allow") || slices.Contains(strings.Split(dir, "/"), "allow")
}

// isRPZ reports whether the list named name is an RPZ zone file.
func isRPZ(name string) bool {
	ext := strings.ToLower(path.Ext(filepath.ToSlash(name)))
	return ext == ".rpz" || ext == ".zone"
}

// ignored reports whether a path below zones.dir (slash-separated,
// relative) is not a list: hidden (any component starting with '.'),
// editor or package-manager leftovers (*~, *.swp, *.swx, *.tmp, *.part,
// *.bak, *.orig, *.rej, *.dpkg-*, #name#).
func ignored(rel string) bool {
	for c := range strings.SplitSeq(rel, "/") {
		if strings.HasPrefix(c, ".") {
			return true
		}
	}
	base := path.Base(rel)
	for _, suf := range []string{"~", ".swp", ".swx", ".tmp", ".part", ".bak", ".orig", ".rej"} {
		if strings.HasSuffix(base, suf) {
			return true
		}
	}
	return strings.Contains(base, ".dpkg-") ||
		(len(base) >= 2 && base[0] == '#' && base[len(base)-1] == '#')
}

// LoadDir parses every list file below dir, sorted by name (the path
// relative to dir, with forward slashes). It skips hidden and backup files
// (see DESIGN.md), follows visible symlinks to files and does not descend
// symlinked directories. A file that fails is a Result with status failed;
// LoadDir itself fails only when dir cannot be read. An empty dir gives no
// results.
func LoadDir(dir string, def sinkhole.Action) ([]Result, error) {
	if err := checkDir(dir); err != nil {
		return nil, fmt.Errorf("zones: load %s: %w", dir, err)
	}
	var out []Result
	err := walkLists(walkRoot(dir), listVisitor{
		file: func(name, p string, _ fs.DirEntry, _ fs.FileInfo) { out = append(out, ParseFile(p, name, def)) },
		bad:  func(name, p string, ferr *FileError) { out = append(out, failedResult(p, name, ferr)) },
	})
	if err != nil {
		return out, fmt.Errorf("zones: load %s: %w", dir, err)
	}
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.Source.Name, b.Source.Name) })
	return out, nil
}

func failedResult(path, name string, err *FileError) Result {
	return Result{
		Source: &sinkhole.Source{Name: name, Path: path, Errors: []string{err.Error()}, LoadedAt: time.Now()},
		Status: StatusFailed,
		Err:    err,
	}
}

// Compile builds a Policy from the results that have rules.
func Compile(s sinkhole.Settings, results []Result) *sinkhole.Policy {
	var rs []*sinkhole.Rules
	for _, r := range results {
		if r.Rules != nil {
			rs = append(rs, r.Rules)
		}
	}
	return sinkhole.NewPolicy(s, rs)
}

// builderSink hands rules to a sinkhole.Builder. Names are copied into a
// batch buffer and converted to one string per batch, so that a file of a
// million names costs a few hundred allocations rather than a million: the
// rules' strings share their batch's memory.
type builderSink struct {
	b     *sinkhole.Builder
	buf   []byte
	batch []pendingRule
}

type pendingRule struct {
	start, end int32 // name in buf
	syn        sinkhole.Syntax
	note       string
}

const batchBytes = 64 << 10

func newBuilderSink(b *sinkhole.Builder) *builderSink {
	return &builderSink{b: b, buf: make([]byte, 0, batchBytes)}
}

func (s *builderSink) domain(name []byte, syn sinkhole.Syntax, note string) {
	if len(s.buf)+len(name) > cap(s.buf) {
		s.flush()
	}
	start := len(s.buf)
	s.buf = append(s.buf, name...)
	s.batch = append(s.batch, pendingRule{start: int32(start), end: int32(len(s.buf)), syn: syn, note: note})
}

func (s *builderSink) prefix(p netip.Prefix, note string) {
	// Keep the order of the file: flush names before this prefix.
	s.flush()
	s.b.AddPrefix(p, note)
}

// flush hands the batched names to the builder.
func (s *builderSink) flush() {
	if len(s.batch) == 0 {
		return
	}
	all := string(s.buf)
	for _, r := range s.batch {
		s.b.AddDomain(all[r.start:r.end], r.syn, r.note)
	}
	s.buf = s.buf[:0]
	s.batch = s.batch[:0]
}
