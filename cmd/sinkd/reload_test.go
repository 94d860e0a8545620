package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The live-reload tests run the binary against a fake upstream that knows
// every name they use, so a name that is not blocked resolves to its real
// address and a blocked one to the sinkhole address.

const reloadSinkhole = "192.0.2.254"

// reloadNames are the fake upstream's names and their real addresses.
var reloadNames = map[string]string{
	"keep.example":   "192.0.2.1",
	"one.example":    "192.0.2.2",
	"two.example":    "192.0.2.3",
	"three.example":  "192.0.2.4",
	"tmp.example":    "192.0.2.5",
	"swp.example":    "192.0.2.6",
	"real.example":   "192.0.2.7",
	"first.example":  "192.0.2.8",
	"second.example": "192.0.2.9",
	"sub.example":    "192.0.2.10",
	"n100.example":   "192.0.2.11",
}

// startReloadSinkd starts sinkd with a short debounce on a zones.dir
// holding lists; zonesKeys are further "key: value" lines of zones:.
func startReloadSinkd(t *testing.T, lists map[string]string, zonesKeys ...string) *instance {
	t.Helper()
	var rrs []string
	for name, a := range reloadNames {
		rrs = append(rrs, name+". 300 IN A "+a)
	}
	up := fakeUpstream(t, rrs...)
	extra := ""
	for _, k := range zonesKeys {
		extra += "  " + k + "\n"
	}
	return startSinkd(t, `
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["`+up+`"]
zones:
  dir: ZONES
  debounce: 50ms
`+extra+`evidence:
  dir: HITS
sinkhole:
  ipv4: `+reloadSinkhole+`
`, lists)
}

// resolvesTo is the address sinkd answers for name.
func (in *instance) resolvesTo(t *testing.T, name string) string {
	t.Helper()
	return strings.Join(addrs(in.ask(t, name, dns.TypeA)), ",")
}

// waitResolve polls until every name resolves to its real address
// (blocked false) or to the sinkhole address (blocked true), for at most
// 10 s.
func (in *instance) waitResolve(t *testing.T, blocked bool, names ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var wrong []string
		for _, n := range names {
			want := reloadNames[n]
			if blocked {
				want = reloadSinkhole
			}
			if got := in.resolvesTo(t, n); got != want {
				wrong = append(wrong, n+"="+got+" (want "+want+")")
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %v", wrong)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// checkResolve asserts at once what waitResolve waits for.
func (in *instance) checkResolve(t *testing.T, blocked bool, names ...string) {
	t.Helper()
	for _, n := range names {
		want := reloadNames[n]
		if blocked {
			want = reloadSinkhole
		}
		if got := in.resolvesTo(t, n); got != want {
			t.Errorf("%s resolves to %s, want %s", n, got, want)
		}
	}
}

type apiList struct {
	Name   string   `json:"name"`
	Status string   `json:"status"`
	SHA256 string   `json:"sha256"`
	Errors []string `json:"errors"`
	Rules  struct {
		Domain int `json:"domain"`
	} `json:"rules"`
}

func (in *instance) lists(t *testing.T) map[string]apiList {
	t.Helper()
	var ls []apiList
	if err := json.Unmarshal([]byte(httpBody(t, "http://"+in.http+"/api/v1/lists")), &ls); err != nil {
		t.Fatal(err)
	}
	out := map[string]apiList{}
	for _, l := range ls {
		out[l.Name] = l
	}
	return out
}

var reloadsRe = regexp.MustCompile(`(?m)^sinkd_reloads_total\{result="[a-z]+"\} (\d+)$`)

// reloads is the sum of sinkd_reloads_total over its results.
func (in *instance) reloads(t *testing.T) int {
	t.Helper()
	n := 0
	for _, m := range reloadsRe.FindAllStringSubmatch(httpBody(t, "http://"+in.http+"/metrics"), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n
}

// dropList writes a list the safe way: a hidden temp file renamed into
// place.
func dropList(t *testing.T, dir, name, content string) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	tmp := filepath.Join(filepath.Dir(p), "."+filepath.Base(p)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func TestReloadDropReplaceDelete(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, map[string]string{"keep.txt": "keep.example\n"})
	in.checkResolve(t, true, "keep.example")
	in.checkResolve(t, false, "one.example", "two.example", "three.example")

	dropList(t, in.zonesDir, "list.txt", "one.example\ntwo.example\n")
	in.waitResolve(t, true, "one.example", "two.example")

	dropList(t, in.zonesDir, "list.txt", "three.example\n")
	in.waitResolve(t, true, "three.example")
	in.checkResolve(t, false, "one.example", "two.example")

	if err := os.Remove(filepath.Join(in.zonesDir, "list.txt")); err != nil {
		t.Fatal(err)
	}
	in.waitResolve(t, false, "three.example")
	in.checkResolve(t, true, "keep.example")
	if ls := in.lists(t); len(ls) != 1 || ls["keep.txt"].Status != "ok" {
		t.Errorf("/api/v1/lists = %+v, want keep.txt only", ls)
	}
	if log := in.log(); !regexp.MustCompile(`msg="list reloaded" .*list=list.txt status=deleted added=0 removed=1 `).MatchString(log) {
		t.Errorf("no log line for the deleted list:\n%s", log)
	}
}

func TestReloadKeepsLastGood(t *testing.T) {
	t.Parallel()
	good := "one.example\ntwo.example\n"
	in := startReloadSinkd(t, map[string]string{"list.txt": good})
	in.checkResolve(t, true, "one.example", "two.example")
	goodSHA := in.lists(t)["list.txt"].SHA256

	dropList(t, in.zonesDir, "list.txt", "<html><body>502 Bad Gateway</body></html>\n")
	l := in.waitList(t, "list.txt", "kept-last-good")
	if l.SHA256 != goodSHA || l.Rules.Domain != 2 || len(l.Errors) == 0 || !strings.Contains(l.Errors[0], "no valid rules") {
		t.Errorf("kept-last-good list = %+v, want the good version's hash and counts, and why the new one failed", l)
	}
	in.checkResolve(t, true, "one.example", "two.example")

	// A list that never had a good version is failed.
	dropList(t, in.zonesDir, "new.txt", "\x00binary")
	dropList(t, in.zonesDir, "real.txt", "real.example\n")
	in.waitResolve(t, true, "real.example")
	if l := in.lists(t)["new.txt"]; l.Status != "failed" {
		t.Errorf("new.txt = %+v, want failed", l)
	}
}

func TestReloadIgnoresTempFiles(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, nil)
	for name, body := range map[string]string{".x.tmp": "tmp.example\n", "x.swp": "swp.example\n"} {
		if err := os.WriteFile(filepath.Join(in.zonesDir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Once a list dropped after the temp files is live, a reload has
	// looked at the whole directory since they were written.
	dropList(t, in.zonesDir, "real.txt", "real.example\n")
	in.waitResolve(t, true, "real.example")
	in.checkResolve(t, false, "tmp.example", "swp.example")
	if ls := in.lists(t); len(ls) != 1 {
		t.Errorf("/api/v1/lists = %+v, want real.txt only", ls)
	}
}

// TestReloadConfigMapSwap lays out zones.dir as a Kubernetes ConfigMap
// volume and swaps its data the way the kubelet does.
func TestReloadConfigMapSwap(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, nil)
	dir := in.zonesDir
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(filepath.Join(dir, "..2026_01"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "..2026_01", "list.txt"), []byte("first.example\n"), 0o644))
	must(os.Symlink("..2026_01", filepath.Join(dir, "..data")))
	must(os.Symlink("..data/list.txt", filepath.Join(dir, "list.txt")))
	in.waitResolve(t, true, "first.example")

	must(os.Mkdir(filepath.Join(dir, "..2026_02"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "..2026_02", "list.txt"), []byte("second.example\n"), 0o644))
	must(os.Symlink("..2026_02", filepath.Join(dir, "..data_tmp")))
	must(os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")))
	must(os.RemoveAll(filepath.Join(dir, "..2026_01")))
	in.waitResolve(t, true, "second.example")
	in.checkResolve(t, false, "first.example")
	if ls := in.lists(t); len(ls) != 1 || ls["list.txt"].Status != "ok" {
		t.Errorf("/api/v1/lists = %+v, want list.txt ok only", ls)
	}
}

func TestReloadCoalescesWrites(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, map[string]string{"list.txt": "n0.example\n"})
	before := in.reloads(t)
	p := filepath.Join(in.zonesDir, "list.txt")
	for i := 1; i <= 100; i++ {
		if err := os.WriteFile(p, []byte("n"+strconv.Itoa(i)+".example\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in.waitResolve(t, true, "n100.example")
	if n := in.reloads(t) - before; n > 10 {
		t.Errorf("100 writes gave %d reloads, want at most 10", n)
	}
}

func TestReloadNewSubdirectory(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, nil)
	if err := os.Mkdir(filepath.Join(in.zonesDir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in.zonesDir, "sub", "x.txt"), []byte("sub.example\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	in.waitResolve(t, true, "sub.example")
	if _, ok := in.lists(t)["sub/x.txt"]; !ok {
		t.Errorf("/api/v1/lists lacks sub/x.txt: %+v", in.lists(t))
	}
}

func TestReloadForced(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, map[string]string{"keep.txt": "keep.example\n", "bad.txt": "<html>\n"})

	resp, err := http.Post("http://"+in.http+"/api/v1/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Status  string `json:"status"`
		Result  string `json:"result"`
		Lists   int    `json:"lists"`
		Changed []any  `json:"changed"`
	}
	err = json.NewDecoder(resp.Body).Decode(&got)
	_ = resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v1/reload: %v %v", resp.Status, err)
	}
	if got.Status != "ok" || got.Result != "partial" || got.Lists != 2 || got.Changed == nil || len(got.Changed) != 0 {
		t.Errorf("POST /api/v1/reload = %+v, want ok, partial, 2 lists, no changes", got)
	}
	metrics := httpBody(t, "http://"+in.http+"/metrics")
	for _, want := range []string{
		`sinkd_reloads_total{result="partial"} 2`, // start-up and POST
		`sinkd_policy_rules{kind="domain",list="keep.txt"} 1`,
		`sinkd_list_skipped_lines{list="bad.txt"} 1`,
		"sinkd_reload_duration_seconds_count 2",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// SIGHUP reloads too (and counts).
	before := in.reloads(t)
	if err := in.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for in.reloads(t) == before {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP: no reload after 10 s")
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	in.checkResolve(t, true, "keep.example")
	if lines := strings.Split(in.log(), "\n"); !slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, `msg="lists reloaded"`) && strings.Contains(l, "full=true") && strings.Contains(l, "result=partial")
	}) {
		t.Errorf("no summary log line of a full reload:\n%s", in.log())
	}
}

// TestReloadRecordedInEvidence: every reload after start-up is a `reload`
// record in the hash chain, naming the list versions that came and went.
func TestReloadRecordedInEvidence(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, map[string]string{"keep.txt": "keep.example\n"})
	dropList(t, in.zonesDir, "list.txt", "one.example\n")
	in.waitResolve(t, true, "one.example")
	if err := os.Remove(filepath.Join(in.zonesDir, "list.txt")); err != nil {
		t.Fatal(err)
	}
	in.waitResolve(t, false, "one.example")
	in.stop(t)

	hitsDir := filepath.Join(in.dir, "hits")
	out, stderr, code := sinkdCmd(t, "hits", "-dir", hitsDir, "-type", "all", "-format", "json")
	if code != 0 {
		t.Fatalf("sinkd hits: exit %d: %s", code, stderr)
	}
	type change struct {
		List      string `json:"list"`
		OldSHA256 string `json:"old_sha256"`
		NewSHA256 string `json:"new_sha256"`
		Added     int    `json:"added"`
		Removed   int    `json:"removed"`
	}
	type source struct {
		List   string `json:"list"`
		Status string `json:"status"`
	}
	var types []string
	var reloads [][]change
	var sources [][]source
	for line := range strings.Lines(out) {
		var r struct {
			Type    string   `json:"type"`
			Changed []change `json:"changed"`
			Sources []source `json:"sources"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatal(err)
		}
		if r.Type != "hit" { // waitResolve's queries for listed names are hits
			types = append(types, r.Type)
		}
		if r.Type == "reload" {
			reloads = append(reloads, r.Changed)
			sources = append(sources, r.Sources)
		}
	}
	if want := []string{"start", "reload", "reload", "stop"}; !slices.Equal(types, want) {
		t.Fatalf("record types = %v, want %v", types, want)
	}
	added, removed := reloads[0], reloads[1]
	if len(added) != 1 || added[0].List != "list.txt" || added[0].OldSHA256 != "" || len(added[0].NewSHA256) != 64 || added[0].Added != 1 {
		t.Errorf("first reload changed = %+v, want list.txt added with its sha256", added)
	}
	if len(removed) != 1 || removed[0].OldSHA256 != added[0].NewSHA256 || removed[0].NewSHA256 != "" || removed[0].Removed != 1 {
		t.Errorf("second reload changed = %+v, want list.txt removed", removed)
	}
	if len(sources[0]) != 2 || len(sources[1]) != 1 || sources[1][0].List != "keep.txt" {
		t.Errorf("reload sources = %+v, want keep.txt+list.txt, then keep.txt", sources)
	}
	if out, _, code := sinkdCmd(t, "verify", "-dir", hitsDir); code != 0 || !strings.HasPrefix(out, "ok: ") {
		t.Errorf("verify: exit %d: %s", code, out)
	}
}

// TestHitsNeedsNoKey: an analyst can search a log without the HMAC key
// (verify needs it), and -summary refuses formats it cannot print.
func TestHitsNeedsNoKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "sinkd.yaml")
	yaml := "evidence:\n  dir: " + filepath.Join(dir, "hits") + "\n  hmac_key_file: " + filepath.Join(dir, "no-such-key") + "\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "hits"), 0o750); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := sinkdCmd(t, "hits", "-config", cfg); code != 0 {
		t.Errorf("hits without the key file: exit %d: %s", code, stderr)
	}
	if _, _, code := sinkdCmd(t, "verify", "-config", cfg); code == 0 {
		t.Error("verify without the key file: exit 0")
	}
	if _, _, code := sinkdCmd(t, "hits", "-config", cfg, "-summary", "-format", "csv"); code != 2 {
		t.Errorf("hits -summary -format csv: exit %d, want 2", code)
	}
}
