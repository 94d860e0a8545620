package zones

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

func checkResults() []Result {
	at := time.Date(2026, 7, 19, 12, 0, 0, 0, time.UTC)
	return []Result{
		{
			Source: &sinkhole.Source{
				Name: "feeds/urlhaus.txt", Path: "zones.d/feeds/urlhaus.txt", SHA256: strings.Repeat("ab", 32),
				Format: "domain+ip", Action: sinkhole.ActionNXDomain, Category: "malware",
				Rules:   sinkhole.RuleCounts{Domain: 2689, IP: 23079},
				Skipped: 1, Errors: []string{`feeds/urlhaus.txt:9: single label "com"`}, LoadedAt: at,
			},
			Rules:  &sinkhole.Rules{},
			Status: StatusOK,
			Took:   12*time.Millisecond + 400*time.Microsecond,
		},
		{
			Source: &sinkhole.Source{
				Name: "policy.rpz", Path: "zones.d/policy.rpz", SHA256: strings.Repeat("cd", 32),
				Action: sinkhole.ActionSinkhole, Errors: []string{"policy.rpz: RPZ not supported yet"}, LoadedAt: at,
			},
			Status: StatusFailed,
			Err:    &FileError{File: "policy.rpz", Reason: "RPZ not supported yet", Err: ErrRPZ},
		},
		{
			Source: &sinkhole.Source{Name: "allow/empty.txt", Path: "zones.d/allow/empty.txt", Action: sinkhole.ActionSinkhole, Allow: true, LoadedAt: at},
			Rules:  &sinkhole.Rules{},
			Status: StatusOK,
		},
	}
}

func TestWriteCheckText(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := WriteCheck(&b, "text", checkResults()); err != nil {
		t.Fatal(err)
	}
	want := "feeds/urlhaus.txt: ok format=domain+ip rules domain=2689 wildcard=0 ip=23079 cidr=0 allow=0 skipped=1 sha256=" + strings.Repeat("ab", 32) + " ms=12\n" +
		`  feeds/urlhaus.txt:9: single label "com"` + "\n" +
		"policy.rpz: failed format=- rules domain=0 wildcard=0 ip=0 cidr=0 allow=0 skipped=0 sha256=" + strings.Repeat("cd", 32) + " ms=0\n" +
		"  policy.rpz: RPZ not supported yet\n" +
		"allow/empty.txt: ok format=- rules domain=0 wildcard=0 ip=0 cidr=0 allow=0 skipped=0 sha256=- ms=0\n"
	if got := b.String(); got != want {
		t.Errorf("text output:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteCheckJSON(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := WriteCheck(&b, "json", checkResults()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines, want 3:\n%s", len(lines), b.String())
	}
	// The /api/v1/lists keys plus file and ms (DESIGN.md).
	wantKeys := []string{"action", "category", "errors", "file", "format", "loaded_at", "ms", "name", "path", "rules", "sha256", "skipped", "status"}
	for i, line := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d: %v: %s", i+1, err, line)
		}
		if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, wantKeys) {
			t.Errorf("line %d keys = %q, want %q", i+1, got, wantKeys)
		}
		rules, _ := m["rules"].(map[string]any)
		if got := slices.Sorted(maps.Keys(rules)); !slices.Equal(got, []string{"allow", "cidr", "domain", "ip", "wildcard"}) {
			t.Errorf("line %d rules keys = %q", i+1, got)
		}
		if _, ok := m["errors"].([]any); !ok {
			t.Errorf("line %d errors = %#v, want an array", i+1, m["errors"])
		}
	}
	var first CheckInfo
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	want := CheckInfo{
		ListInfo: ListInfo{
			Name: "feeds/urlhaus.txt", Path: "zones.d/feeds/urlhaus.txt", Format: "domain+ip", Action: "nxdomain",
			Category: "malware", Rules: sinkhole.RuleCounts{Domain: 2689, IP: 23079}, Skipped: 1,
			Errors: []string{`feeds/urlhaus.txt:9: single label "com"`}, SHA256: strings.Repeat("ab", 32),
			LoadedAt: time.Date(2026, 7, 19, 12, 0, 0, 0, time.UTC), Status: "ok",
		},
		File: "zones.d/feeds/urlhaus.txt",
		MS:   12,
	}
	if first.Name != want.Name || first.Path != want.Path || first.Format != want.Format || first.Action != want.Action ||
		first.Category != want.Category || first.Rules != want.Rules || first.Skipped != want.Skipped ||
		!slices.Equal(first.Errors, want.Errors) || first.SHA256 != want.SHA256 || !first.LoadedAt.Equal(want.LoadedAt) ||
		first.Status != want.Status || first.File != want.File || first.MS != want.MS {
		t.Errorf("first line = %+v\nwant %+v", first, want)
	}
	if !strings.Contains(lines[2], `"errors":[]`) {
		t.Errorf("a list without errors has errors %s, want []", lines[2])
	}
}

func TestWriteCheckUnknownFormat(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	if err := WriteCheck(&b, "yaml", checkResults()); err == nil || b.Len() != 0 {
		t.Errorf("WriteCheck(yaml) = %v with %q, want an error and no output", err, b.String())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteCheckWriteError(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"text", "json"} {
		if err := WriteCheck(failWriter{}, f, checkResults()); err == nil {
			t.Errorf("WriteCheck(%s) to a failing writer succeeded", f)
		}
	}
}

// TestCheckRealFile runs a file through ParseFile and WriteCheck, as `sinkd
// check FILE` does.
func TestCheckRealFile(t *testing.T) {
	t.Parallel()
	content := "# sinkd: action=log category=watch\nevil.example\n0.0.0.0 a.example b.example\n192.0.2.0/24 ; SBL1\ncom\n"
	p := writeFile(t, t.TempDir(), "watch.txt", content)
	r := ParseFile(p, p, sinkhole.ActionSinkhole, 0)
	var b bytes.Buffer
	if err := WriteCheck(&b, "text", []Result{r}); err != nil {
		t.Fatal(err)
	}
	wantPrefix := p + ": ok format=domain+hosts+cidr rules domain=3 wildcard=0 ip=0 cidr=1 allow=0 skipped=1 sha256=" + sha(content) + " ms="
	got := b.String()
	if !strings.HasPrefix(got, wantPrefix) || !strings.HasSuffix(got, "\n  "+p+":5: single label \"com\"\n") {
		t.Errorf("check output:\n%s\nwant prefix:\n%s", got, wantPrefix)
	}
	info := r.ListInfo()
	if info.Action != "log" || info.Category != "watch" || info.Status != "ok" {
		t.Errorf("ListInfo = %+v", info)
	}
}
