package zones

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// Files no list should be: too large, binary, full of junk, with lines of
// a megabyte, or not files at all. Each fails alone, naming itself (and its
// line), without hanging, crashing or reading more than the bound.

// sparse makes p a file of size bytes with no data blocks: a 1 GiB file
// that costs no disk (it reads as NUL bytes).
func sparse(t *testing.T, p string, size int64) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// junk returns n pseudo-random bytes, the same every run; without nul, its
// NUL bytes are replaced (so only the content, not a NUL, fails it).
func junk(n int, nul bool) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'j', 'u', 'n', 'k'})
	_, _ = r.Read(b)
	if !nul {
		for i, c := range b {
			if c == 0 {
				b[i] = 1
			}
		}
	}
	return b
}

// longLine is a line of n bytes of text that is no rule, without its
// line break.
func longLine(n int) string {
	return strings.Repeat("x", n)
}

const mb = 1 << 20

func TestParseFileHostile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	long := longLine(mb)
	rnd, rndNUL := junk(mb, false), junk(mb, true)
	tests := []struct {
		name        string
		file        string
		write       func(p string)
		maxSize     int64 // 0: ParseFile's default
		wantStatus  string
		wantErr     string // a regexp matching the whole error; "" for none
		wantErrIs   error
		wantErrs    []string // Source.Errors when the file is ok
		wantDomains int
		wantSHA     string // "-": the content's; "": none
	}{
		{
			name: "sparse 1 GiB fails unread", file: "big.txt",
			write:      func(p string) { sparse(t, p, 1<<30) },
			wantStatus: StatusFailed, wantErr: `big\.txt: file too large \(1073741824 > zones\.max_file_size 268435456\)`,
			wantErrIs: ErrTooLarge,
		},
		{
			name: "one byte over a small bound", file: "over.txt",
			write:   func(p string) { writeFile(t, dir, "over.txt", "a.example\n") },
			maxSize: 9, wantStatus: StatusFailed, wantErr: `over\.txt: file too large \(10 > zones\.max_file_size 9\)`,
			wantErrIs: ErrTooLarge,
		},
		{
			name: "exactly the bound", file: "exact.txt",
			write:   func(p string) { writeFile(t, dir, "exact.txt", "a.example\n") },
			maxSize: 10, wantStatus: StatusOK, wantDomains: 1, wantSHA: "-",
		},
		{
			name: "random bytes without NUL", file: "junk.txt",
			write:      func(p string) { writeFile(t, dir, "junk.txt", string(rnd)) },
			wantStatus: StatusFailed, wantErr: `junk\.txt: no valid rules \(\d+ lines skipped\)`, wantErrIs: ErrNoRules,
			wantSHA: "-",
		},
		{
			name: "random bytes with NUL", file: "nul.txt",
			write:      func(p string) { writeFile(t, dir, "nul.txt", string(rndNUL)) },
			wantStatus: StatusFailed, wantErr: `nul\.txt:\d+: binary file`, wantErrIs: ErrBinary, wantSHA: "-",
		},
		{
			name: "1 MB lines between good lines", file: "long.txt",
			write: func(p string) {
				writeFile(t, dir, "long.txt", "a.example\n"+long+"\nb.example\n"+long+"\r\n"+long+"\nbad\nc.example\n"+long)
			},
			wantStatus: StatusOK, wantDomains: 3, wantSHA: "-",
			wantErrs: []string{
				"long.txt:2: line too long", "long.txt:4: line too long", "long.txt:5: line too long",
				`long.txt:6: single label "bad"`, "long.txt:8: line too long",
			},
		},
		{
			name: "1 MB line with a NUL at its end", file: "longnul.txt",
			write:      func(p string) { writeFile(t, dir, "longnul.txt", "a.example\nb.example\n"+long+"\x00\nc.example\n") },
			wantStatus: StatusFailed, wantErr: `longnul\.txt:3: binary file`, wantErrIs: ErrBinary, wantSHA: "-",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(dir, tt.file)
			tt.write(p)
			r := ParseFile(p, tt.file, sinkhole.ActionSinkhole, tt.maxSize)
			if r.Status != tt.wantStatus {
				t.Fatalf("status = %s (%v), want %s", r.Status, r.Err, tt.wantStatus)
			}
			if tt.wantErr == "" {
				if r.Err != nil {
					t.Fatalf("err = %v", r.Err)
				}
			} else {
				if r.Err == nil || !regexp.MustCompile(`^`+tt.wantErr+`$`).MatchString(r.Err.Error()) || !errors.Is(r.Err, tt.wantErrIs) {
					t.Fatalf("err = %v, want %s wrapping %v", r.Err, tt.wantErr, tt.wantErrIs)
				}
				if r.Rules != nil || r.Source.Errors[0] != r.Err.Error() {
					t.Errorf("failed file: rules %v, errors %q", r.Rules, r.Source.Errors)
				}
			}
			if tt.wantErrs != nil && !slices.Equal(r.Source.Errors, tt.wantErrs) {
				t.Errorf("errors = %q, want %q", r.Source.Errors, tt.wantErrs)
			}
			if r.Source.Rules.Domain != tt.wantDomains {
				t.Errorf("domains = %d, want %d", r.Source.Rules.Domain, tt.wantDomains)
			}
			wantSHA := tt.wantSHA
			if wantSHA == "-" {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				wantSHA = sha(string(b))
			}
			if r.Source.SHA256 != wantSHA {
				t.Errorf("sha256 = %q, want %q", r.Source.SHA256, wantSHA)
			}
		})
	}
}

// TestParseFileGrewWhileRead reads a file whose size, when it is opened,
// is under the bound but which yields more: a file in /proc is one (its
// size is 0). So is a list that an editor appends to while it is read.
func TestParseFileGrewWhileRead(t *testing.T) {
	t.Parallel()
	const p = "/proc/self/maps"
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		t.Skip("no /proc/self/maps of size 0 here")
	}
	r := ParseFile(p, "maps.txt", sinkhole.ActionSinkhole, 100)
	want := "maps.txt: file too large (grew past zones.max_file_size 100 while read)"
	if r.Status != StatusFailed || r.Err == nil || r.Err.Error() != want || !errors.Is(r.Err, ErrTooLarge) {
		t.Errorf("status %s, err %v; want failed, %q", r.Status, r.Err, want)
	}
	if r.Source.SHA256 != "" {
		t.Errorf("sha256 = %s of a file not read to its end", r.Source.SHA256)
	}
}

func TestCapReader(t *testing.T) {
	t.Parallel()
	data := "0123456789"
	tests := []struct {
		name     string
		max      int64
		oneByte  bool
		wantRead string
		wantErr  bool
	}{
		{name: "under", max: 11, wantRead: data},
		{name: "exact", max: 10, wantRead: data},
		{name: "exact one byte at a time", max: 10, oneByte: true, wantRead: data},
		{name: "over", max: 9, wantRead: data[:9], wantErr: true},
		{name: "over one byte at a time", max: 9, oneByte: true, wantRead: data[:9], wantErr: true},
		{name: "zero", max: 0, wantRead: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var r io.Reader = strings.NewReader(data)
			if tt.oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(&capReader{r: r, left: tt.max, max: tt.max})
			if string(got) != tt.wantRead || (err != nil) != tt.wantErr || err != nil && !errors.Is(err, ErrTooLarge) {
				t.Errorf("read %q, %v; want %q, error %v", got, err, tt.wantRead, tt.wantErr)
			}
		})
	}
}

// TestLoadDirHostile loads a directory of every kind of bad file beside a
// good one: each fails alone, naming itself; none hangs the load.
func TestLoadDirHostile(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "zones.d")
	writeFile(t, dir, "good.txt", "good.example\n")
	writeFile(t, dir, "junk.txt", string(junk(mb, false)))
	writeFile(t, dir, "nul.txt", "a.example\n"+string(junk(mb, true)))
	writeFile(t, dir, "long.txt", "long.example\n"+longLine(mb)+"\nlong2.example\n")
	sparse(t, filepath.Join(dir, "big.txt"), 1<<30)
	symlink(t, filepath.Join(base, "nowhere.txt"), filepath.Join(dir, "dangling.txt"))
	writeFile(t, base, "elsewhere/x.txt", "x.example\n")
	symlink(t, filepath.Join(base, "elsewhere"), filepath.Join(dir, "linked.txt"))
	fifo := mkfifo(t, filepath.Join(dir, "pipe.txt"))

	type loaded struct {
		rs  []Result
		err error
	}
	done := make(chan loaded, 1)
	go func() {
		rs, err := LoadDir(dir, sinkhole.ActionSinkhole, 0)
		done <- loaded{rs, err}
	}()
	var l loaded
	select {
	case l = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("LoadDir hangs") // a named pipe opened for reading waits for a writer
	}
	if l.err != nil {
		t.Fatal(l.err)
	}
	want := map[string]string{ // name: "ok", or a regexp of the whole error
		"good.txt":     "ok",
		"long.txt":     "ok",
		"big.txt":      `big\.txt: file too large \(1073741824 > zones\.max_file_size 268435456\)`,
		"junk.txt":     `junk\.txt: no valid rules \(\d+ lines skipped\)`,
		"nul.txt":      `nul\.txt:\d+: binary file`,
		"dangling.txt": regexp.QuoteMeta("dangling.txt: cannot read: dangling symlink to " + filepath.Join(base, "nowhere.txt")),
		"linked.txt":   `linked\.txt: is a directory \(symlinked directories are not descended\)`,
	}
	if fifo {
		want["pipe.txt"] = `pipe\.txt: not a regular file \(named pipe\)`
	}
	got := map[string]Result{}
	for _, r := range l.rs {
		got[r.Source.Name] = r
	}
	if len(got) != len(want) {
		t.Errorf("lists %v, want %d", listStatuses(l.rs), len(want))
	}
	for name, w := range want {
		r, ok := got[name]
		switch {
		case !ok:
			t.Errorf("%s: not listed", name)
		case w == "ok":
			if r.Status != StatusOK {
				t.Errorf("%s: %s, %v; want ok", name, r.Status, r.Err)
			}
		case r.Status != StatusFailed || r.Err == nil || !regexp.MustCompile(`^`+w+`$`).MatchString(r.Err.Error()):
			t.Errorf("%s: %s, %v; want failed, %s", name, r.Status, r.Err, w)
		}
	}
	if s := got["long.txt"].Source; s.Skipped != 1 || len(s.Errors) != 1 || s.Errors[0] != "long.txt:2: line too long" {
		t.Errorf("long.txt: skipped %d, errors %q", s.Skipped, s.Errors)
	}
	p := Compile(sinkhole.Settings{Action: sinkhole.ActionSinkhole}, l.rs)
	for _, n := range []string{"good.example", "long.example", "long2.example"} {
		if blockedBy(p, n) == "" {
			t.Errorf("%s is not blocked: the good lists did not load", n)
		}
	}
}

// TestOpenListNeverBlocks opens a named pipe nobody writes to: it must
// fail at once, whether it is met when stat'ed or (swapped in after the
// stat) when opened.
func TestOpenListNeverBlocks(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "pipe.txt")
	if !mkfifo(t, p) {
		t.Skip("no named pipes here")
	}
	done := make(chan error, 2)
	go func() {
		f, _, err := openList(p, DefaultMaxFileSize)
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	go func() {
		// The open itself, as openList does it after its stat.
		f, err := os.OpenFile(p, os.O_RDONLY|openNonblock, 0)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err == nil {
			_, err = checkList(p, fi, DefaultMaxFileSize)
		}
		done <- err
	}()
	for range 2 {
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) {
				t.Errorf("err = %v, want ErrNotRegular", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("opening a named pipe blocks")
		}
	}
}

// writeJunkList writes a list of n MiB that is mostly what a parser must
// read and drop: lines of 300 KB, long comments, lines that are no rules.
// Every MiB holds the same one valid rule, so the list is ok and its rules
// take no memory worth counting.
func writeJunkList(t testing.TB, p string, n int) int64 {
	t.Helper()
	var chunk bytes.Buffer
	chunk.WriteString("ok.example\n# " + longLine(100<<10) + "\n")
	chunk.WriteString(longLine(300<<10) + "\n\n")
	for i := range 1000 {
		fmt.Fprintf(&chunk, "not a rule %d\n", i%10)
	}
	chunk.WriteString(longLine(mb-1-chunk.Len()) + "\n")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, mb)
	for range n {
		if _, err := w.Write(chunk.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return int64(n) * int64(chunk.Len())
}

// TestParseFileMemoryBounded parses a 100 MiB list of junk and long lines:
// what the parse allocates in all must not grow with the file. It is not
// parallel, so that the process's allocation counter is the parse's.
func TestParseFileMemoryBounded(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk.txt")
	size := writeJunkList(t, p, 100)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := ParseFile(p, "junk.txt", sinkhole.ActionSinkhole, 0)
	runtime.ReadMemStats(&after)
	if r.Status != StatusOK || r.Source.Rules.Domain != 1 {
		t.Fatalf("status %s, rules %+v: %v", r.Status, r.Source.Rules, r.Err)
	}
	// The read buffer (64 KiB), the hash, the first errors, the rule: well
	// under a megabyte. Reading the file whole, or a line whole, would be
	// more than 100 times that.
	const bound = 4 << 20
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("parsing %d MiB allocated %d KiB in all (%d lines skipped)", size>>20, alloc>>10, r.Source.Skipped)
	if alloc > bound {
		t.Errorf("parsing %d MiB allocated %d KiB, want at most %d KiB: reading is not streaming", size>>20, alloc>>10, bound>>10)
	}
}

// BenchmarkParseFileJunk100MiB parses a 100 MiB list that is mostly junk
// and long lines: B/op is what reading it costs in memory, whatever its
// size.
func BenchmarkParseFileJunk100MiB(b *testing.B) {
	p := filepath.Join(b.TempDir(), "junk.txt")
	b.SetBytes(writeJunkList(b, p, 100))
	b.ReportAllocs()
	for b.Loop() {
		if r := ParseFile(p, "junk.txt", sinkhole.ActionSinkhole, 0); r.Status != StatusOK {
			b.Fatal(r.Err)
		}
	}
}
