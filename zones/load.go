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
	// ErrTooLarge means the file is larger than zones.max_file_size, or
	// grew past it while it was read.
	ErrTooLarge = errors.New("zones: file too large")
)

// Result statuses.
const (
	StatusOK           = "ok"             // parsed, rules compiled
	StatusFailed       = "failed"         // no rules from this file
	StatusKeptLastGood = "kept-last-good" // this version failed, the previous one is in force
)

// DefaultMaxFileSize is the largest list file read (zones.max_file_size).
// A larger file fails before it is read; one that grows past it while it
// is read fails then. Either way no more than this is ever read.
const DefaultMaxFileSize = 256 << 20

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

// ParseFile parses and compiles one list file of at most maxSize bytes
// (zones.max_file_size; <= 0 means DefaultMaxFileSize): a larger file fails
// with ErrTooLarge before it is read, as does a file that grows past it
// while it is read. name is its path relative to zones.dir with forward
// slashes (or the path as given to `sinkd check`); it names the Source and
// decides whether the file is an allowlist (a directory component "allow",
// or a base name holding ".allow") or an RPZ zone (.rpz, .zone). def is the
// action of files without a directive.
//
// The file is read once, streaming: it is hashed while it is parsed, and
// memory does not grow with its size (beyond its rules). Only a regular
// file is opened: a directory, named pipe, socket or device fails without
// being read.
func ParseFile(path, name string, def sinkhole.Action, maxSize int64) Result {
	if maxSize <= 0 {
		maxSize = DefaultMaxFileSize
	}
	start := time.Now()
	src := &sinkhole.Source{
		Name:     name,
		Path:     path,
		Action:   def,
		Allow:    isAllow(name),
		LoadedAt: start,
	}
	res := Result{Source: src, Status: StatusOK}
	if res.Err = parseFile(&res, maxSize); res.Err != nil {
		res.Status = StatusFailed
		// The reason first, then the first skipped lines: at most
		// maxErrors in all.
		src.Errors = append([]string{res.Err.Error()}, src.Errors[:min(len(src.Errors), maxErrors-1)]...)
	}
	res.Took = time.Since(start)
	return res
}

// parseFile fills res (its Rules only when the file is good); it returns
// why the file failed.
func parseFile(res *Result, maxSize int64) error {
	src := res.Source
	fail := func(line int, reason string, err error) error {
		return &FileError{File: src.Name, Line: line, Reason: reason, Err: err}
	}
	f, reason, err := openList(src.Path, maxSize)
	if err != nil {
		return fail(0, reason, err)
	}
	defer f.Close()
	h := sha256.New()
	br := bufio.NewReaderSize(io.TeeReader(&capReader{r: f, left: maxSize, max: maxSize}, h), maxLine)
	hashed := func() error {
		if _, err := io.Copy(io.Discard, br); err != nil {
			return readError(src.Name, 0, err)
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
		if errors.Is(perr, ErrTooLarge) {
			return perr // not read to its end: no hash
		}
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

// openList opens the list file at p: a regular file (symlinks followed) of
// at most maxSize bytes. It never blocks and never opens what is not a
// regular file: it stats first, then opens non-blocking and checks the open
// file again, in case another file (a named pipe, whose open would wait for
// a writer) took its place in between. On failure it returns the reason for
// a FileError and the error to wrap.
func openList(p string, maxSize int64) (*os.File, string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, "cannot read: " + statErrText(p, err), err
	}
	if reason, err := checkList(p, fi, maxSize); err != nil {
		return nil, reason, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, "cannot read: " + statErrText(p, err), err
	}
	reason := ""
	if fi, err = f.Stat(); err != nil {
		reason = "cannot read: " + errText(err)
	} else {
		reason, err = checkList(p, fi, maxSize)
	}
	if err != nil {
		_ = f.Close()
		return nil, reason, err
	}
	return f, "", nil
}

// checkList returns why a file described by fi is not a list to read,
// with the error to wrap; "", nil when it is.
func checkList(p string, fi fs.FileInfo, maxSize int64) (string, error) {
	switch m := fi.Mode(); {
	case m.IsDir():
		if l, err := os.Lstat(p); err == nil && l.Mode()&fs.ModeSymlink != 0 {
			return "is a directory (symlinked directories are not descended)", ErrNotRegular
		}
		return "is a directory", ErrNotRegular
	case !m.IsRegular():
		return "not a regular file (" + modeKind(m) + ")", ErrNotRegular
	case fi.Size() > maxSize:
		return fmt.Sprintf("file too large (%d > zones.max_file_size %d)", fi.Size(), maxSize), ErrTooLarge
	}
	return "", nil
}

// modeKind names the type of a file that is neither regular nor a
// directory.
func modeKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeCharDevice != 0:
		return "character device"
	case m&fs.ModeDevice != 0:
		return "block device"
	}
	return "irregular file"
}

// statErrText is errText, naming the target of a dangling symlink.
func statErrText(p string, err error) string {
	if errors.Is(err, fs.ErrNotExist) {
		if target, lerr := os.Readlink(p); lerr == nil {
			return "dangling symlink to " + target
		}
	}
	return errText(err)
}

// errGrew is capReader's error: the file grew past its bound while it
// was read.
type errGrew struct{ max int64 }

func (e *errGrew) Error() string {
	return fmt.Sprintf("file too large (grew past zones.max_file_size %d while read)", e.max)
}

func (e *errGrew) Unwrap() error { return ErrTooLarge }

// capReader reads at most left bytes from r: past them it fails with
// *errGrew. It reads one byte more than allowed to tell a file of exactly
// the bound from a longer one; that byte is never returned.
type capReader struct {
	r    io.Reader
	left int64 // bytes still allowed
	max  int64
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, &errGrew{max: c.max}
	}
	if int64(len(p)) > c.left {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	if int64(n) > c.left {
		n, c.left = int(c.left), -1
		return n, &errGrew{max: c.max}
	}
	c.left -= int64(n)
	return n, err
}

// readError is the FileError of a read that failed at line (0: no line to
// blame): a file that grew too large, or an os error.
func readError(file string, line int, err error) *FileError {
	var g *errGrew
	if errors.As(err, &g) {
		return &FileError{File: file, Reason: g.Error(), Err: ErrTooLarge}
	}
	return &FileError{File: file, Line: line, Reason: "cannot read: " + errText(err), Err: err}
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
			return readError(p.src.Name, n, err)
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
// symlinked directories (each is listed as failed: "is a directory"). A
// file that fails is a Result with status failed; LoadDir itself fails only
// when dir cannot be read. An empty dir gives no results. Files larger than
// maxSize (as in ParseFile) fail unread.
func LoadDir(dir string, def sinkhole.Action, maxSize int64) ([]Result, error) {
	if err := checkDir(dir); err != nil {
		return nil, fmt.Errorf("zones: load %s: %w", dir, err)
	}
	var out []Result
	err := walkLists(walkRoot(dir), listVisitor{
		file: func(name, p string, _ fs.DirEntry, _ fs.FileInfo) {
			out = append(out, ParseFile(p, name, def, maxSize))
		},
		bad: func(name, p string, ferr *FileError) { out = append(out, failedResult(p, name, ferr)) },
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
