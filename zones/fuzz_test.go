package zones

import (
	"bytes"
	"errors"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var reErrLine = regexp.MustCompile(`^fuzz\.txt:([0-9]+): [a-z]`)

// validName is the contract of a name handed to the sink, checked without
// the parser's code.
func validName(name []byte) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	labels := bytes.Split(name, []byte("."))
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
		for _, c := range l {
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// FuzzParse parses a whole file's bytes: it must never panic; every name
// handed on is valid and lower-case, every prefix masked, unmapped and
// without zone; every reported error carries a line number within the
// file; a name handed on parses back to itself.
func FuzzParse(f *testing.F) {
	f.Add([]byte("evil.example\n0.0.0.0 a.example b.example # note\n||c.example^$important\n*.d.example\n192.0.2.1\n203.0.113.7/24 ; SBL1\n"))
	f.Add([]byte("# sinkd: action=nxdomain category=phishing\n@@||a.example^\ncom\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, p, err := parseBytes("fuzz.txt", bytes.Clone(data))
		lines := bytes.Count(data, []byte("\n")) + 1
		if p.rules != len(c.rules) {
			t.Fatalf("counted %d rules, handed on %d", p.rules, len(c.rules))
		}
		for _, n := range c.names {
			if !validName(n) {
				t.Fatalf("invalid name handed on: %q", n)
			}
			var back collect
			if r := parseLine(bytes.Clone(n), &back); r.rules != 1 || back.rules[0] != "plain "+string(n) {
				t.Fatalf("name %q parses back as %q (%s)", n, back.rules, r.why)
			}
		}
		for _, pfx := range c.pfxs {
			if !pfx.IsValid() || pfx != pfx.Masked() || pfx.Addr().Zone() != "" || pfx.Addr().Is4In6() {
				t.Fatalf("bad prefix handed on: %v", pfx)
			}
		}
		if len(p.errs) > maxErrors || p.skipped < len(p.errs) {
			t.Fatalf("%d errors for %d skipped lines", len(p.errs), p.skipped)
		}
		for _, e := range p.errs {
			m := reErrLine.FindStringSubmatch(e)
			if m == nil {
				t.Fatalf("error without FILE:LINE: %q", e)
			}
			if n, _ := strconv.Atoi(m[1]); n < 1 || n > lines {
				t.Fatalf("error line %d outside 1..%d: %q", n, lines, e)
			}
		}
		if err != nil {
			var fe *FileError
			if !errors.As(err, &fe) || fe.File != "fuzz.txt" || fe.Line < 1 || fe.Line > lines {
				t.Fatalf("error %#v does not name the file and a line", err)
			}
		} else if bytes.IndexByte(data, 0) >= 0 {
			t.Fatal("a file holding a NUL byte parsed")
		}
	})
}

// FuzzParseAddr checks the allocation-free address and prefix parsers
// against net/netip.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "0.0.0.0", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5",
		"1..2.3", "2001:db8::1", "::ffff:1.2.3.4", "fe80::1%eth0", "192.0.2.0/24", "192.0.2.0/024", "192.0.2.0/33",
		"192.0.2.0/", "2001:db8::/32", "1.2.3.4/0", "1.2.3.4/-1", "1.2.3.4/+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ok := parseAddr([]byte(s))
		wa, err := netip.ParseAddr(s)
		if ok != (err == nil) || ok && a != wa {
			t.Fatalf("parseAddr(%q) = %v, %v; netip: %v, %v", s, a, ok, wa, err)
		}
		if !strings.Contains(s, "/") {
			return
		}
		p, ok := parsePrefix([]byte(s))
		wp, err := netip.ParsePrefix(s)
		if ok != (err == nil) || ok && p != wp {
			t.Fatalf("parsePrefix(%q) = %v, %v; netip: %v, %v", s, p, ok, wp, err)
		}
	})
}
