package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// sinkdBin is the real binary, built once for the end-to-end tests.
var sinkdBin string

func TestMain(m *testing.M) {
	// Fuzzing (coordinator and workers) and -test.list need no binary:
	// skip the build there.
	flag.Parse()
	for _, name := range []string{"test.fuzz", "test.fuzzworker", "test.list"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" && f.Value.String() != "false" {
			os.Exit(m.Run())
		}
	}
	dir, err := os.MkdirTemp("", "sinkd-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sinkdBin = filepath.Join(dir, "sinkd")
	out, err := exec.Command("go", "build", "-o", sinkdBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building sinkd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// fakeUpstream is an authoritative-ish server on 127.0.0.1 that answers from
// a fixed table of zone-file records, over UDP and TCP.
func fakeUpstream(t *testing.T, records ...string) string {
	t.Helper()
	var rrs []dns.RR
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		name := strings.ToLower(q.Name)
		for _, rr := range rrs { // follow CNAMEs like a resolver would
			if strings.EqualFold(rr.Header().Name, name) && (rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME) {
				m.Answer = append(m.Answer, rr)
				if c, ok := rr.(*dns.CNAME); ok {
					name = strings.ToLower(c.Target)
				}
			}
		}
		for _, rr := range rrs {
			if len(m.Answer) > 0 && strings.EqualFold(rr.Header().Name, name) && rr.Header().Rrtype == q.Qtype && !contains(m.Answer, rr) {
				m.Answer = append(m.Answer, rr)
			}
		}
		if len(m.Answer) == 0 && q.Qtype != dns.TypeNS {
			m.Rcode = dns.RcodeNameError
		}
		_ = w.WriteMsg(m)
	})
	pc, ln := listenUDPAndTCP(t)
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		ready := make(chan struct{})
		s.NotifyStartedFunc = func() { close(ready) }
		go func() { _ = s.ActivateAndServe() }()
		<-ready
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String()
}

// listenUDPAndTCP binds UDP and TCP on one ephemeral port of 127.0.0.1.
// The TCP port can be taken (a client's TIME_WAIT socket of an earlier
// test): then it picks again.
func listenUDPAndTCP(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	for i := 0; ; i++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		_ = pc.Close()
		if !errors.Is(err, syscall.EADDRINUSE) || i == 20 {
			t.Fatal(err)
		}
	}
}

func contains(rrs []dns.RR, x dns.RR) bool {
	for _, rr := range rrs {
		if dns.IsDuplicate(rr, x) {
			return true
		}
	}
	return false
}

// instance is a running sinkd binary.
type instance struct {
	cmd      *exec.Cmd
	dns      string
	http     string
	mu       sync.Mutex
	stderr   bytes.Buffer
	exited   chan struct{}
	exitErr  error
	dir      string
	zonesDir string
}

var servingRe = regexp.MustCompile(`msg="sinkd serving".*dns="?\[([^\]]+)\]"? http=(\S+)`)

// startSinkd runs the binary with config yaml (ZONES and HITS are replaced
// by directories in a temp dir) and waits for its "serving" log line.
func startSinkd(t *testing.T, yaml string, lists map[string]string) *instance {
	t.Helper()
	if !strings.Contains(yaml, "upstreams:") {
		// Without it sinkd would ask /etc/resolv.conf's servers: tests only
		// ever talk to loopback.
		t.Fatal("startSinkd: the config must set upstreams (a fake on 127.0.0.1)")
	}
	dir := t.TempDir()
	in := &instance{dir: dir, zonesDir: filepath.Join(dir, "zones.d"), exited: make(chan struct{})}
	for name, body := range lists {
		p := filepath.Join(in.zonesDir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	yaml = strings.NewReplacer("ZONES", in.zonesDir, "HITS", filepath.Join(dir, "hits")).Replace(yaml)
	cfg := filepath.Join(dir, "sinkd.yaml")
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	in.cmd = exec.Command(sinkdBin, "serve", "-config", cfg)
	in.cmd.Dir = dir
	pr, pw := io.Pipe()
	in.cmd.Stderr = pw
	if err := in.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			in.mu.Lock()
			in.stderr.WriteString(line + "\n")
			in.mu.Unlock()
			if m := servingRe.FindStringSubmatch(line); m != nil {
				found <- [2]string{m[1], m[2]}
			}
		}
	}()
	go func() { in.exitErr = in.cmd.Wait(); _ = pw.Close(); close(in.exited) }()
	t.Cleanup(func() {
		_ = in.cmd.Process.Kill()
		<-in.exited
		if t.Failed() {
			t.Logf("sinkd stderr:\n%s", in.log())
		}
	})
	select {
	case a := <-found:
		in.dns, in.http = a[0], a[1]
	case <-in.exited:
		t.Fatalf("sinkd exited before serving: %v\n%s", in.exitErr, in.log())
	case <-time.After(30 * time.Second):
		t.Fatalf("sinkd not serving after 30 s\n%s", in.log())
	}
	return in
}

// stop sends SIGTERM and waits for a clean exit (status 0).
func (in *instance) stop(t *testing.T) {
	t.Helper()
	if err := in.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-in.exited:
		if in.exitErr != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", in.exitErr)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("sinkd still running 15 s after SIGTERM")
	}
}

func (in *instance) log() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stderr.String()
}

func (in *instance) ask(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.SetEdns0(1232, false)
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, in.dns)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

// addrs lists the A/AAAA addresses of an answer.
func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return out
}

func TestServeSinkholesListedNamesCNAMEsAndAddresses(t *testing.T) {
	up := fakeUpstream(t,
		"good.example. 300 IN A 192.0.2.10",
		"good.example. 300 IN AAAA 2001:db8::10",
		"www.evil.example. 300 IN A 192.0.2.66",
		"notevil.example. 300 IN A 192.0.2.11",
		"cdn.example. 300 IN CNAME tracker.bad-cname.example.",
		"tracker.bad-cname.example. 300 IN A 192.0.2.12",
		"pointer.example. 300 IN A 203.0.113.45",
		"allowed.evil.example. 300 IN A 192.0.2.13",
		"mail.evil.example. 300 IN MX 10 mx.good.example.",
	)
	in := startSinkd(t, `
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
upstreams: ["`+up+`"]
zones:
  dir: ZONES
evidence:
  dir: HITS
sinkhole:
  ipv4: 192.0.2.254
`, map[string]string{
		"malware.txt":     "# a test list\nevil.example\nbad-cname.example\n203.0.113.0/24\n",
		"allow/ok.txt":    "allowed.evil.example\n",
		"phish.txt":       "# sinkd: action=nxdomain category=phishing\nphish.example\n",
		"broken.rpz":      "$ORIGIN rpz.\nevil2.example CNAME .\n",
		".hidden.txt.tmp": "good.example\n",
	})

	tests := []struct {
		name      string
		qtype     uint16
		wantRcode int
		want      []string
		wantEDE   string
	}{
		{name: "good.example", qtype: dns.TypeA, want: []string{"192.0.2.10"}},
		{name: "good.example", qtype: dns.TypeAAAA, want: []string{"2001:db8::10"}},
		{name: "www.evil.example", qtype: dns.TypeA, want: []string{"192.0.2.254"}, wantEDE: "blocked by malware.txt"},
		{name: "www.evil.example", qtype: dns.TypeAAAA, want: []string{"::"}, wantEDE: "blocked by malware.txt"},
		{name: "mail.evil.example", qtype: dns.TypeMX, want: nil, wantEDE: "blocked by malware.txt"},
		{name: "notevil.example", qtype: dns.TypeA, want: []string{"192.0.2.11"}},
		{name: "cdn.example", qtype: dns.TypeA, want: []string{"192.0.2.254"}, wantEDE: "blocked by malware.txt"},
		{name: "pointer.example", qtype: dns.TypeA, want: []string{"192.0.2.254"}, wantEDE: "blocked by malware.txt"},
		{name: "allowed.evil.example", qtype: dns.TypeA, want: []string{"192.0.2.13"}},
		{name: "login.phish.example", qtype: dns.TypeA, wantRcode: dns.RcodeNameError, wantEDE: "blocked by phish.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"/"+dns.TypeToString[tt.qtype], func(t *testing.T) {
			r := in.ask(t, tt.name, tt.qtype)
			if r.Rcode != tt.wantRcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.wantRcode])
			}
			if got := addrs(r); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("addresses = %v, want %v (answer %v)", got, tt.want, r.Answer)
			}
			var ede string
			if o := r.IsEdns0(); o != nil {
				for _, opt := range o.Option {
					if e, ok := opt.(*dns.EDNS0_EDE); ok && e.InfoCode == dns.ExtendedErrorCodeBlocked {
						ede = e.ExtraText
					}
				}
			}
			if ede != tt.wantEDE {
				t.Errorf("EDE 15 text = %q, want %q", ede, tt.wantEDE)
			}
		})
	}

	// /api/v1/lists reports every list, the RPZ file as failed.
	resp, err := http.Get("http://" + in.http + "/api/v1/lists")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lists []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Rules  struct {
			Domain int `json:"domain"`
			CIDR   int `json:"cidr"`
			Allow  int `json:"allow"`
		} `json:"rules"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&lists); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range lists {
		got[l.Name] = fmt.Sprintf("%s d=%d c=%d a=%d", l.Status, l.Rules.Domain, l.Rules.CIDR, l.Rules.Allow)
	}
	want := map[string]string{
		"allow/ok.txt": "ok d=0 c=0 a=1",
		"broken.rpz":   "failed d=0 c=0 a=0",
		"malware.txt":  "ok d=2 c=1 a=0",
		"phish.txt":    "ok d=1 c=0 a=0",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("/api/v1/lists = %v, want %v", got, want)
	}

	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		waitHTTP(t, "http://"+in.http+path, http.StatusOK)
	}
	body := httpBody(t, "http://"+in.http+"/metrics")
	for _, want := range []string{`sinkd_queries_total{proto="udp",qtype="A",rcode="NOERROR"}`, "sinkd_cache_hits_total", "sinkd_upstream_requests_total", `sinkd_policy_hits_total{action="sinkhole",trigger="cname"} 1`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	in.stop(t) // SIGTERM: a clean exit 0
}

// waitHTTP polls url until it answers status or 10 s pass.
func waitHTTP(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d, last: %v %v", url, status, resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// loadYAML loads a config file holding yaml (no default upstreams).
func loadYAML(t *testing.T, yaml string) (*config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sinkd.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return loadConfig(p, "")
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "unknown key names key and line", yaml: "listen:\n  dns: [\"127.0.0.1:0\"]\n  bogus: 1\n", wantErr: `line 3: unknown key "listen.bogus"`},
		{name: "unknown top-level key", yaml: "zones:\n  dir: x\nfeedz: []\n", wantErr: `line 3: unknown key "feedz"`},
		{name: "bad duration", yaml: "upstream_timeout: soon\n", wantErr: `invalid duration "soon"`},
		{name: "bad action", yaml: "sinkhole:\n  action: explode\n", wantErr: "sinkhole.action"},
		{name: "bad listen", yaml: "listen:\n  dns: [\"localhost\"]\n", wantErr: "listen.dns"},
		{name: "bad upstream", yaml: "upstreams: [\"ftp://x\"]\n", wantErr: "ftp://x"},
		{name: "bad prefix", yaml: "access:\n  allow: [\"10.0.0.0/33\"]\n", wantErr: "10.0.0.0/33"},
		{name: "bad sinkhole address", yaml: "sinkhole:\n  ipv4: \"::1\"\n", wantErr: "sinkhole.ipv4"},
		{name: "negative per-client TCP cap", yaml: "listen:\n  tcp_max_conns_per_client: -1\n", wantErr: "listen.tcp_max_conns_per_client"},
		{name: "admin API beyond loopback needs a token", yaml: "listen:\n  http: 0.0.0.0:8053\n", wantErr: "set listen.http_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadYAML(t, tt.yaml)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("loadConfig error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigDurationsAndDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadYAML(t, "upstream_timeout: 1500ms\ncache:\n  max_ttl: 2d\n  min_ttl: 30\n  serve_stale: false\nupstreams: [\"127.0.0.1:5390\"]\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.resolver.QueryTimeout != 1500*time.Millisecond || c.resolver.Cache.MaxTTL != 48*time.Hour ||
		c.resolver.Cache.MinTTL != 30*time.Second || c.resolver.Cache.ServeStale || !c.resolver.Cache.Prefetch {
		t.Errorf("resolver config = %+v", c.resolver)
	}
	if c.resolver.Listen[0] != "127.0.0.1:5353" || c.httpAddr != "127.0.0.1:8053" || c.zonesDir != "./zones.d" {
		t.Errorf("defaults not kept: %v %v %v", c.resolver.Listen, c.httpAddr, c.zonesDir)
	}
}

func TestDocumentedConfigLoads(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("../../configs/sinkd.yaml", "")
	if err != nil {
		t.Fatalf("configs/sinkd.yaml does not load: %v", err)
	}
	d, err := buildConfig(defaultFile(), "")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.resolver) != fmt.Sprint(d.resolver) || c.settings != d.settings {
		t.Errorf("configs/sinkd.yaml differs from the built-in defaults:\n%+v\n%+v", c.resolver, d.resolver)
	}
}

func TestCheckCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.txt")
	bad := filepath.Join(dir, "bad.txt")
	if err := os.WriteFile(good, []byte("evil.example\n||ads.example^\n*.wild.example\n192.0.2.1\n198.51.100.0/24\nnot a name\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("<html>oops</html>\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, int) {
		out, err := exec.Command(sinkdBin, append([]string{"check"}, args...)...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	out, code := run(good)
	if code != 0 || !regexp.MustCompile(`^`+regexp.QuoteMeta(good)+`: ok format=\S+ rules domain=2 wildcard=1 ip=1 cidr=1 allow=0 skipped=1 sha256=[0-9a-f]{64} ms=\d+\n`).MatchString(out) {
		t.Errorf("check good: exit %d\n%s", code, out)
	}
	if out, code = run(good, bad); code != 1 || !strings.Contains(out, bad+": failed") {
		t.Errorf("check good bad: exit %d, want 1\n%s", code, out)
	}
	for _, tt := range []struct{ q, want string }{
		{"www.evil.example", "www.evil.example: blocked by " + good + " rule evil.example trigger=qname action=sinkhole\n"},
		{"x.ads.example", "x.ads.example: blocked by " + good + " rule ||ads.example^ trigger=qname action=sinkhole\n"},
		{"198.51.100.7", "198.51.100.7: blocked by " + good + " rule 198.51.100.0/24 trigger=ip action=sinkhole\n"},
		{"notevil.example", "notevil.example: not listed\n"},
	} {
		if out, code := run("-q", tt.q, good); code != 0 || out != tt.want {
			t.Errorf("check -q %s: exit %d, got %q, want %q", tt.q, code, out, tt.want)
		}
	}
	if _, code := run("-format", "yaml", good); code != 2 {
		t.Errorf("bad -format: exit %d, want 2", code)
	}
	// check reads lists with serve's zones.max_file_size.
	cfg := filepath.Join(dir, "small.yaml")
	if err := os.WriteFile(cfg, []byte("zones:\n  max_file_size: 16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := run("-config", cfg, good); code != 1 || !strings.Contains(out, "file too large") {
		t.Errorf("check with zones.max_file_size 16: exit %d, want 1 and file too large\n%s", code, out)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	out, err := exec.Command(sinkdBin, "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "sinkd ") || !strings.Contains(string(out), "go1.") {
		t.Errorf("version: %q %v", out, err)
	}
}

func TestHTTPToken(t *testing.T) {
	t.Parallel()
	up := fakeUpstream(t, "a.example. 60 IN A 192.0.2.1")
	in := startSinkd(t, `
listen:
  dns: ["127.0.0.1:0"]
  http: 127.0.0.1:0
  http_token: s3cret-token
upstreams: ["`+up+`"]
zones:
  dir: ZONES
evidence:
  dir: HITS
`, nil)
	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", "http://"+in.http+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		path, auth string
		want       int
	}{
		{"/healthz", "", 200},
		{"/metrics", "", 401},
		{"/api/v1/lists", "Bearer wrong", 401},
		{"/api/v1/hits", "", 401},
		{"/metrics", "Bearer s3cret-token", 200},
		{"/api/v1/lists", "Bearer s3cret-token", 200},
	} {
		if got := get(tt.path, tt.auth); got != tt.want {
			t.Errorf("GET %s (auth %q) = %d, want %d", tt.path, tt.auth, got, tt.want)
		}
	}
}
