package zones

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sinkd/sinkd/sinkhole"
)

// writeFile writes content to dir/name, creating parent directories.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	return p
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestParseFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		file         string // name relative to the directory
		content      string
		def          sinkhole.Action
		wantStatus   string
		wantErrIs    error
		wantErrs     []string // Source.Errors
		wantFormat   string
		wantSkipped  int
		wantAction   sinkhole.Action
		wantCategory string
		wantAllow    bool
	}{
		{
			name: "plain list", file: "malware.txt", content: "# header\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "empty file is a valid empty list", file: "empty.txt", content: "",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "comments only is a valid empty list", file: "c.txt", content: "# a\n; b\n! c\n\n   \n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "hosts boilerplate only is a valid empty list", file: "hosts", content: "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "hosts", wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "no valid rules", file: "bad.txt", content: "# header\ncom\n@@||a.example^\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrNoRules, wantSkipped: 2,
			wantErrs: []string{
				"bad.txt: no valid rules (2 lines skipped)",
				`bad.txt:2: single label "com"`,
				`bad.txt:3: unsupported adblock rule "@@||a.example^"`,
			},
			wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "bad lines skipped", file: "some.txt", content: "good.example\nBAD..example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantSkipped: 1,
			wantErrs:   []string{`some.txt:2: empty label "BAD..example"`},
			wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "NUL byte", file: "bin.txt", content: "evil.example\nabc\x00def\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrBinary, wantFormat: "domain",
			wantErrs: []string{"bin.txt:2: binary file"}, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "NUL byte on the first line", file: "bin.gz", content: "\x1f\x8b\x08\x00",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrBinary,
			wantErrs: []string{"bin.gz:1: binary file"}, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "rpz", file: "policy.rpz", content: "evil.example CNAME .\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrRPZ,
			wantErrs: []string{"policy.rpz: RPZ not supported yet"}, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "zone looking like a list", file: "feeds/x.ZONE", content: "evil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrRPZ,
			wantErrs: []string{"feeds/x.ZONE: RPZ not supported yet"}, wantAction: sinkhole.ActionSinkhole,
		},

		// Directives.
		{
			name: "directive", file: "phish.txt", content: "# sinkd: action=nxdomain category=phishing\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain",
			wantAction: sinkhole.ActionNXDomain, wantCategory: "phishing",
		},
		{
			name: "directive sinkhole over another default", file: "a.txt", content: "# sinkd: action=sinkhole\nevil.example\n",
			def: sinkhole.ActionLog, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "directive nodata", file: "a.txt", content: "# sinkd: action=nodata\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionNoData,
		},
		{
			name: "directive refuse", file: "a.txt", content: "# sinkd: action=refuse\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionRefuse,
		},
		{
			name: "directive drop, no space, upper case", file: "a.txt", content: "#sinkd: action=DROP\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionDrop,
		},
		{
			name: "directive log after BOM, CRLF", file: "a.txt", content: "\xef\xbb\xbf# sinkd: category=watch action=log\r\nevil.example\r\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionLog, wantCategory: "watch",
		},
		{
			name: "directive without fields", file: "a.txt", content: "# sinkd:\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "directive on line 2 is a comment", file: "a.txt", content: "# list\n# sinkd: action=bogus\nevil.example\n",
			def: sinkhole.ActionNXDomain, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionNXDomain,
		},
		{
			name: "unknown action", file: "a.txt", content: "# sinkd: action=x\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrDirective,
			wantErrs: []string{`a.txt:1: unknown action "x"`}, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "empty action", file: "a.txt", content: "# sinkd: action=\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrDirective,
			wantErrs: []string{`a.txt:1: unknown action ""`}, wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "unknown key", file: "a.txt", content: "# sinkd: action=nxdomain colour=red\nevil.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusFailed, wantErrIs: ErrDirective,
			wantErrs: []string{`a.txt:1: unknown key "colour"`}, wantAction: sinkhole.ActionNXDomain,
		},

		// Allowlists.
		{
			name: "allow directory", file: "allow/corp.txt", content: "corp.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole, wantAllow: true,
		},
		{
			name: "allow in the name", file: "x.allow.txt", content: "corp.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole, wantAllow: true,
		},
		{
			name: "allowlist suffix", file: "feeds/partners.allowlist", content: "corp.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole, wantAllow: true,
		},
		{
			name: "allowed is not allow", file: "allowed.txt", content: "corp.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole,
		},
		{
			name: "notallow directory is not allow", file: "notallow/x.txt", content: "corp.example\n",
			def: sinkhole.ActionSinkhole, wantStatus: StatusOK, wantFormat: "domain", wantAction: sinkhole.ActionSinkhole,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := writeFile(t, dir, tt.file, tt.content)
			r := ParseFile(p, tt.file, tt.def, 0)
			s := r.Source
			if r.Status != tt.wantStatus {
				t.Errorf("status = %q, want %q (err %v)", r.Status, tt.wantStatus, r.Err)
			}
			if (r.Rules != nil) != (tt.wantStatus == StatusOK) {
				t.Errorf("Rules = %v with status %q", r.Rules, r.Status)
			}
			if tt.wantErrIs == nil && r.Err != nil || tt.wantErrIs != nil && !errors.Is(r.Err, tt.wantErrIs) {
				t.Errorf("err = %v, want %v", r.Err, tt.wantErrIs)
			}
			var fe *FileError
			if r.Err != nil && (!errors.As(r.Err, &fe) || fe.File != tt.file) {
				t.Errorf("err = %#v, want a *FileError naming %s", r.Err, tt.file)
			}
			if !slices.Equal(s.Errors, tt.wantErrs) {
				t.Errorf("Errors = %q, want %q", s.Errors, tt.wantErrs)
			}
			if s.Name != tt.file || s.Path != p {
				t.Errorf("Name, Path = %q, %q; want %q, %q", s.Name, s.Path, tt.file, p)
			}
			if s.SHA256 != sha(tt.content) {
				t.Errorf("SHA256 = %s, want %s", s.SHA256, sha(tt.content))
			}
			if s.Format != tt.wantFormat {
				t.Errorf("Format = %q, want %q", s.Format, tt.wantFormat)
			}
			if s.Skipped != tt.wantSkipped {
				t.Errorf("Skipped = %d, want %d", s.Skipped, tt.wantSkipped)
			}
			if s.Action != tt.wantAction || s.Category != tt.wantCategory {
				t.Errorf("Action, Category = %d, %q; want %d, %q", s.Action, s.Category, tt.wantAction, tt.wantCategory)
			}
			if s.Allow != tt.wantAllow {
				t.Errorf("Allow = %v, want %v", s.Allow, tt.wantAllow)
			}
			if s.LoadedAt.IsZero() {
				t.Error("LoadedAt is zero")
			}
			if r.Rules != nil && r.Rules.Source() != s {
				t.Error("Rules.Source() is not the Result's Source")
			}
		})
	}
}

func TestParseFileUnreadable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name      string
		path      string
		wantErrIs error
		wantErr   string
	}{
		{name: "missing", path: filepath.Join(dir, "missing.txt"), wantErrIs: fs.ErrNotExist, wantErr: "missing.txt: cannot read: no such file or directory"},
		{name: "directory", path: dir, wantErrIs: ErrNotRegular, wantErr: "missing.txt: is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := ParseFile(tt.path, "missing.txt", sinkhole.ActionSinkhole, 0)
			if r.Status != StatusFailed || r.Rules != nil {
				t.Errorf("status = %q, Rules = %v; want failed, nil", r.Status, r.Rules)
			}
			if !errors.Is(r.Err, tt.wantErrIs) || r.Err.Error() != tt.wantErr {
				t.Errorf("err = %v, want %q wrapping %v", r.Err, tt.wantErr, tt.wantErrIs)
			}
			if !slices.Equal(r.Source.Errors, []string{tt.wantErr}) {
				t.Errorf("Errors = %q", r.Source.Errors)
			}
		})
	}
}

// TestParseFileCounts checks the rule counts that sinkhole's Builder fills
// in from what the parser hands it: kinds as written, exact duplicates
// removed, every rule of an allowlist counted as allow.
func TestParseFileCounts(t *testing.T) {
	t.Parallel()
	mixed := "evil.example\n" +
		"evil.example\n" + // exact duplicate
		"EVIL.example.\n" + // the same name as written, canonically
		"sub.evil.example\n" + // a name whose parent is listed still counts
		"0.0.0.0 hosts.example other.example # two\n" +
		"127.0.0.1 localhost\n" +
		"||adblock.example^\n" +
		"||important.example^$important\n" +
		"*.wild.example\n" +
		"192.0.2.1\n" +
		"2001:db8::1\n" +
		"203.0.113.0/24 ; SBL1\n" +
		"198.51.100.0/24\n" +
		"@@||skipped.example^\n"
	tests := []struct {
		name string
		file string
		want sinkhole.RuleCounts
	}{
		{name: "blocklist", file: "mixed.txt", want: sinkhole.RuleCounts{Domain: 6, Wildcard: 1, IP: 2, CIDR: 2}},
		{name: "allowlist", file: "allow/mixed.txt", want: sinkhole.RuleCounts{Allow: 11}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, t.TempDir(), tt.file, mixed)
			r := ParseFile(p, tt.file, sinkhole.ActionSinkhole, 0)
			if r.Status != StatusOK {
				t.Fatalf("status %q: %v", r.Status, r.Err)
			}
			if r.Source.Rules != tt.want {
				t.Errorf("Rules = %+v, want %+v", r.Source.Rules, tt.want)
			}
			if r.Source.Skipped != 1 {
				t.Errorf("Skipped = %d, want 1", r.Source.Skipped)
			}
		})
	}
}

func TestIgnored(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		want bool
	}{
		{"malware.txt", false},
		{"feeds/urlhaus.txt", false},
		{"allow/corp.txt", false},
		{"hosts", false},
		{"a#b.txt", false},
		{".list.tmp", true},
		{".hidden", true},
		{"..data", true},
		{"..2024_01_01/list.txt", true},
		{".git/config", true},
		{"feeds/.state.json", true},
		{"feeds/.urlhaus.txt.1234", true},
		{"list.txt~", true},
		{"list.txt.swp", true},
		{"list.txt.swx", true},
		{"list.tmp", true},
		{"list.txt.part", true},
		{"list.txt.bak", true},
		{"list.txt.orig", true},
		{"list.txt.rej", true},
		{"list.txt.dpkg-new", true},
		{"list.txt.dpkg-old", true},
		{"#list.txt#", true},
		{"sub/#list.txt#", true},
	}
	for _, tt := range tests {
		if got := ignored(tt.name); got != tt.want {
			t.Errorf("ignored(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLoadDir(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dir := filepath.Join(base, "zones.d")
	writeFile(t, dir, "a.txt", "a.example\n")
	writeFile(t, dir, "sub/x.txt", "x.example\n")
	writeFile(t, dir, "feeds/urlhaus.txt", "# sinkd: action=nxdomain category=malware\nu.example\n")
	writeFile(t, dir, "allow/corp.txt", "corp.example\n")
	writeFile(t, dir, "broken.txt", "com\n")
	// A directory where a file might be expected is just a directory.
	writeFile(t, dir, "d.txt/inner.txt", "inner.example\n")
	// Ignored: hidden files and directories, editor and package leftovers.
	for _, n := range []string{
		".hidden.txt", ".git/config", "sub/.list.tmp", "x.txt~", "x.swp", "x.swx", "x.tmp",
		"x.part", "x.bak", "x.orig", "x.rej", "x.dpkg-new", "#x#", ".dir/visible.txt",
	} {
		writeFile(t, dir, n, "ignored.example\n")
	}
	// A symlink to a file outside is followed; its target's bytes count.
	target := writeFile(t, base, "outside/target.txt", "target.example\n")
	symlink(t, target, filepath.Join(dir, "b.txt"))
	// A dangling symlink fails, naming the file.
	symlink(t, filepath.Join(base, "nowhere.txt"), filepath.Join(dir, "dangling.txt"))
	// A symlinked directory is not descended: it fails, naming itself.
	writeFile(t, base, "otherdir/in.txt", "in.example\n")
	symlink(t, filepath.Join(base, "otherdir"), filepath.Join(dir, "linkdir"))
	// A Kubernetes ConfigMap volume: visible links through the hidden ..data.
	writeFile(t, dir, "..2024_01_01_00_00_00.1/cm.txt", "cm.example\n")
	symlink(t, "..2024_01_01_00_00_00.1", filepath.Join(dir, "..data"))
	symlink(t, "..data/cm.txt", filepath.Join(dir, "cm.txt"))

	rs, err := LoadDir(dir, sinkhole.ActionSinkhole, 0)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ name, status, sha string }
	var got []row
	for _, r := range rs {
		got = append(got, row{r.Source.Name, r.Status, r.Source.SHA256})
	}
	want := []row{
		{"a.txt", StatusOK, sha("a.example\n")},
		{"allow/corp.txt", StatusOK, sha("corp.example\n")},
		{"b.txt", StatusOK, sha("target.example\n")},
		{"broken.txt", StatusFailed, sha("com\n")},
		{"cm.txt", StatusOK, sha("cm.example\n")},
		{"d.txt/inner.txt", StatusOK, sha("inner.example\n")},
		{"dangling.txt", StatusFailed, ""},
		{"feeds/urlhaus.txt", StatusOK, sha("# sinkd: action=nxdomain category=malware\nu.example\n")},
		{"linkdir", StatusFailed, ""},
		{"sub/x.txt", StatusOK, sha("x.example\n")},
	}
	if !slices.Equal(got, want) {
		t.Errorf("LoadDir:\n got %v\nwant %v", got, want)
	}
	byName := map[string]Result{}
	for _, r := range rs {
		byName[r.Source.Name] = r
	}
	if r := byName["dangling.txt"]; r.Err == nil || r.Err.Error() != "dangling.txt: cannot read: dangling symlink to "+filepath.Join(base, "nowhere.txt") || !errors.Is(r.Err, fs.ErrNotExist) {
		t.Errorf("dangling.txt: err = %v, want one naming the file and its target", r.Err)
	}
	if r := byName["linkdir"]; r.Err == nil || r.Err.Error() != "linkdir: is a directory (symlinked directories are not descended)" || !errors.Is(r.Err, ErrNotRegular) {
		t.Errorf("linkdir: err = %v", r.Err)
	}
	if r := byName["b.txt"]; r.Source.Path != filepath.Join(dir, "b.txt") {
		t.Errorf("b.txt: Path = %q, want the link's path", r.Source.Path)
	}
	if s := byName["allow/corp.txt"].Source; !s.Allow {
		t.Error("allow/corp.txt is not an allowlist")
	}
	if s := byName["feeds/urlhaus.txt"].Source; s.Action != sinkhole.ActionNXDomain || s.Category != "malware" {
		t.Errorf("feeds/urlhaus.txt: action, category = %d, %q", s.Action, s.Category)
	}
}

func TestLoadDirEmptyMissingSymlinked(t *testing.T) {
	t.Parallel()
	base := t.TempDir()

	empty := filepath.Join(base, "empty")
	if err := os.Mkdir(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	rs, err := LoadDir(empty, sinkhole.ActionSinkhole, 0)
	if err != nil || len(rs) != 0 {
		t.Errorf("LoadDir(empty) = %d results, %v; want none, nil", len(rs), err)
	}

	if _, err := LoadDir(filepath.Join(base, "missing"), sinkhole.ActionSinkhole, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadDir(missing) err = %v, want ErrNotExist", err)
	}

	file := writeFile(t, base, "file.txt", "a.example\n")
	if _, err := LoadDir(file, sinkhole.ActionSinkhole, 0); err == nil {
		t.Error("LoadDir(a file) succeeded")
	}

	// zones.dir itself may be a symlink (/etc/sinkd/zones.d -> ...).
	writeFile(t, base, "real/list.txt", "a.example\n")
	link := filepath.Join(base, "link")
	symlink(t, filepath.Join(base, "real"), link)
	rs, err = LoadDir(link, sinkhole.ActionSinkhole, 0)
	if err != nil || len(rs) != 1 || rs[0].Source.Name != "list.txt" || rs[0].Status != StatusOK {
		t.Errorf("LoadDir(symlinked dir) = %+v, %v; want list.txt ok", rs, err)
	}
}

func TestCompile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, dir, "a.txt", "a.example\n")
	writeFile(t, dir, "b.txt", "com\n")
	writeFile(t, dir, "c.txt", "c.example\n")
	rs, err := LoadDir(dir, sinkhole.ActionSinkhole, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := Compile(sinkhole.Settings{Action: sinkhole.ActionSinkhole}, rs)
	var names []string
	for _, r := range p.Rules() {
		names = append(names, r.Source().Name)
	}
	if want := []string{"a.txt", "c.txt"}; !slices.Equal(names, want) {
		t.Errorf("Compile: rule sets of %q, want %q", names, want)
	}
}

func TestParseFileFailedErrorsCapped(t *testing.T) {
	t.Parallel()
	p := writeFile(t, t.TempDir(), "junk.txt", strings.Repeat("junk\n", 8))
	r := ParseFile(p, "junk.txt", sinkhole.ActionSinkhole, 0)
	want := []string{
		"junk.txt: no valid rules (8 lines skipped)",
		`junk.txt:1: single label "junk"`,
		`junk.txt:2: single label "junk"`,
		`junk.txt:3: single label "junk"`,
		`junk.txt:4: single label "junk"`,
	}
	if r.Status != StatusFailed || r.Source.Skipped != 8 || !slices.Equal(r.Source.Errors, want) {
		t.Errorf("status %s, skipped %d, errors %q; want failed, 8, %q", r.Status, r.Source.Skipped, r.Source.Errors, want)
	}
}
