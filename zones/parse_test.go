package zones

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sinkd/sinkd/sinkhole"
)

// collect is a sink that records rules as text: "plain evil.example",
// "wildcard evil.example", "adblock evil.example", "important
// evil.example", "prefix 192.0.2.0/24", each followed by " #note" when the
// rule has a note.
type collect struct {
	rules []string
	names [][]byte // domain names as handed over, for invariants
	pfxs  []netip.Prefix
}

func (c *collect) domain(name []byte, syn sinkhole.Syntax, note string) {
	c.names = append(c.names, bytes.Clone(name))
	c.rules = append(c.rules, withNote(syntaxName(syn)+" "+string(name), note))
}

func (c *collect) prefix(p netip.Prefix, note string) {
	c.pfxs = append(c.pfxs, p)
	c.rules = append(c.rules, withNote("prefix "+p.String(), note))
}

func withNote(s, note string) string {
	if note != "" {
		return s + " #" + note
	}
	return s
}

func syntaxName(s sinkhole.Syntax) string {
	switch s {
	case sinkhole.SyntaxPlain:
		return "plain"
	case sinkhole.SyntaxWildcard:
		return "wildcard"
	case sinkhole.SyntaxAdblock:
		return "adblock"
	case sinkhole.SyntaxAdblockImportant:
		return "important"
	}
	return fmt.Sprintf("syntax(%d)", s)
}

// parseBytes runs the file parser over data with a collecting sink.
func parseBytes(name string, data []byte) (*collect, *fileParser, error) {
	c := &collect{}
	p := &fileParser{src: &sinkhole.Source{Name: name}, sink: c}
	err := p.parse(bufio.NewReaderSize(bytes.NewReader(data), maxLine))
	return c, p, err
}

func TestParseLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		line       string
		wantRules  []string
		wantFormat string
		wantWhy    string
	}{
		// Comments and blank lines.
		{name: "empty", line: ""},
		{name: "blank", line: " \t\r"},
		{name: "hash comment", line: "# evil.example"},
		{name: "semicolon comment", line: "; evil.example"},
		{name: "bang comment", line: "! evil.example"},
		{name: "indented comment", line: "   # evil.example"},

		// Plain domains.
		{name: "plain", line: "evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "domain"},
		{name: "plain is not its parent", line: "notevil.example", wantRules: []string{"plain notevil.example"}, wantFormat: "domain"},
		{name: "plain subdomain", line: "a.b.evil.example", wantRules: []string{"plain a.b.evil.example"}, wantFormat: "domain"},
		{name: "upper case and final dot", line: "Evil.EXAMPLE.", wantRules: []string{"plain evil.example"}, wantFormat: "domain"},
		{name: "CRLF", line: "evil.example\r", wantRules: []string{"plain evil.example"}, wantFormat: "domain"},
		{name: "indented", line: "  evil.example  ", wantRules: []string{"plain evil.example"}, wantFormat: "domain"},
		{name: "punycode kept", line: "xn--bcher-kva.example", wantRules: []string{"plain xn--bcher-kva.example"}, wantFormat: "domain"},
		{name: "underscore", line: "_dmarc.evil_host.example", wantRules: []string{"plain _dmarc.evil_host.example"}, wantFormat: "domain"},
		{name: "digits", line: "0022a601.pphost.net", wantRules: []string{"plain 0022a601.pphost.net"}, wantFormat: "domain"},
		{name: "hash note", line: "evil.example # C2 server", wantRules: []string{"plain evil.example #C2 server"}, wantFormat: "domain"},
		{name: "semicolon note", line: "evil.example\t;seen 2024", wantRules: []string{"plain evil.example #seen 2024"}, wantFormat: "domain"},
		{name: "hash without space is no comment", line: "evil.example#frag", wantWhy: whyChar},
		{name: "single label", line: "com", wantWhy: whySingle},
		{name: "single label local", line: "local", wantWhy: whySingle},
		{name: "single label with dot", line: "com.", wantWhy: whySingle},
		{name: "root", line: ".", wantWhy: whyEmpty},
		{name: "empty label", line: "evil..example", wantWhy: whyEmptyLabel},
		{name: "leading dot", line: ".evil.example", wantWhy: whyEmptyLabel},
		{name: "label 63", line: strings.Repeat("a", 63) + ".example", wantRules: []string{"plain " + strings.Repeat("a", 63) + ".example"}, wantFormat: "domain"},
		{name: "label 64", line: strings.Repeat("a", 64) + ".example", wantWhy: whyLabelLong},
		{name: "name 253", line: name253, wantRules: []string{"plain " + name253}, wantFormat: "domain"},
		{name: "name 253 and final dot", line: name253 + ".", wantRules: []string{"plain " + name253}, wantFormat: "domain"},
		{name: "name 254", line: "a" + name253, wantWhy: whyNameLong},
		{name: "non-ASCII", line: "bücher.example", wantWhy: whyNonASCII},
		{name: "space in the middle", line: "evil example", wantWhy: whyTrailing},
		{name: "zone file line", line: "evil.example CNAME .", wantWhy: whyTrailing},
		{name: "invalid character", line: "ev!l.example", wantWhy: whyChar},
		{name: "numeric top-level label", line: "foo.123", wantWhy: whyNumericTLD},
		{name: "three numbers", line: "1.2.3", wantWhy: whyNumericTLD},
		{name: "URL", line: "http://evil.example/x.exe", wantWhy: whyURL},
		{name: "path", line: "evil.example/x.exe", wantWhy: whyAdblock},

		// Hosts.
		{name: "hosts", line: "0.0.0.0 evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts tab", line: "0.0.0.0\tEvil.Example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts several names", line: "127.0.0.1 a.example b.example  c.example", wantRules: []string{"plain a.example", "plain b.example", "plain c.example"}, wantFormat: "hosts"},
		{name: "hosts any address", line: "192.0.2.7 evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts IPv6 address", line: ":: evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts zoned address", line: "fe80::1%lo0 evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts note", line: "0.0.0.0 a.example b.example # phish kit", wantRules: []string{"plain a.example #phish kit", "plain b.example #phish kit"}, wantFormat: "hosts"},
		{name: "hosts localhost", line: "127.0.0.1 localhost", wantFormat: "hosts"},
		{name: "hosts localhost.localdomain", line: "127.0.0.1 localhost.localdomain", wantFormat: "hosts"},
		{name: "hosts local", line: "127.0.0.1 local", wantFormat: "hosts"},
		{name: "hosts broadcasthost", line: "255.255.255.255 broadcasthost", wantFormat: "hosts"},
		{name: "hosts 0.0.0.0", line: "0.0.0.0 0.0.0.0", wantFormat: "hosts"},
		{name: "hosts ip6 names", line: "::1 localhost ip6-localhost ip6-loopback", wantFormat: "hosts"},
		{name: "hosts ip6-allnodes", line: "ff02::1 ip6-allnodes", wantFormat: "hosts"},
		{name: "hosts boilerplate upper case", line: "127.0.0.1 LocalHost", wantFormat: "hosts"},
		{name: "hosts boilerplate and a rule", line: "127.0.0.1 localhost evil.example", wantRules: []string{"plain evil.example"}, wantFormat: "hosts"},
		{name: "hosts one bad name skips the line", line: "0.0.0.0 good.example bad..example", wantWhy: whyEmptyLabel},
		{name: "hosts single label", line: "0.0.0.0 com", wantWhy: whySingle},
		{name: "hosts address as name", line: "0.0.0.0 192.0.2.1", wantWhy: whyHostAddr},
		{name: "hosts IPv6 as name", line: "0.0.0.0 2001:db8::1", wantWhy: whyHostAddr},
		{name: "CIDR then text", line: "192.0.2.0/24 SBL1", wantWhy: whyTrailing},

		// Adblock.
		{name: "adblock", line: "||evil.example^", wantRules: []string{"adblock evil.example"}, wantFormat: "adblock"},
		{name: "adblock important", line: "||Evil.Example^$IMPORTANT", wantRules: []string{"important evil.example"}, wantFormat: "adblock"},
		{name: "adblock note", line: "||evil.example^ # from EasyList", wantRules: []string{"adblock evil.example #from EasyList"}, wantFormat: "adblock"},
		{name: "adblock address", line: "||104.154.237.93^", wantRules: []string{"prefix 104.154.237.93/32"}, wantFormat: "adblock"},
		{name: "adblock third-party", line: "||a.example^$third-party", wantWhy: whyAdblock},
		{name: "adblock important and more", line: "||a.example^$important,third-party", wantWhy: whyAdblock},
		{name: "adblock exception", line: "@@||a.example^", wantWhy: whyAdblock},
		{name: "adblock without separator", line: "||a.example", wantWhy: whyAdblock},
		{name: "adblock path", line: "||a.example/ads/", wantWhy: whyAdblock},
		{name: "adblock port", line: "||a.example:8080", wantWhy: whyAdblock},
		{name: "adblock wildcard inside", line: "||anet*.tradedoubler.com^", wantWhy: whyAdblock},
		{name: "adblock modifier after separator", line: "||teraxhif.com^third-party", wantWhy: whyAdblock},
		{name: "adblock regexp", line: "/ads[0-9]+\\.example/", wantWhy: whyAdblock},
		{name: "adblock cosmetic", line: "example.com##.banner", wantWhy: whyAdblock},
		{name: "adblock domain anchor", line: ".adonweb.ru^", wantWhy: whyAdblock},
		{name: "adblock URL rule", line: "http://7ads.ru^", wantWhy: whyAdblock},
		{name: "adblock single label", line: "||com^", wantWhy: whySingle},
		{name: "adblock empty", line: "||^", wantWhy: whyAdblock},

		// Wildcards.
		{name: "wildcard", line: "*.evil.example", wantRules: []string{"wildcard evil.example"}, wantFormat: "wildcard"},
		{name: "wildcard upper case", line: "*.EVIL.example.", wantRules: []string{"wildcard evil.example"}, wantFormat: "wildcard"},
		{name: "wildcard note", line: "*.evil.example ; kit", wantRules: []string{"wildcard evil.example #kit"}, wantFormat: "wildcard"},
		{name: "wildcard of a TLD", line: "*.com", wantWhy: whySingle},
		{name: "wildcard of an address", line: "*.1.0.209.238", wantWhy: whyWildcardAddr},
		{name: "wildcard alone", line: "*.", wantWhy: whyEmpty},
		{name: "wildcard without dot", line: "*evil.example", wantWhy: whyAdblock},
		{name: "wildcard inside", line: "*.evil.*.example", wantWhy: whyAdblock},

		// Addresses.
		{name: "IPv4", line: "192.0.2.1", wantRules: []string{"prefix 192.0.2.1/32"}, wantFormat: "ip"},
		{name: "IPv4 note", line: "192.0.2.1 ; Pikabot C2", wantRules: []string{"prefix 192.0.2.1/32 #Pikabot C2"}, wantFormat: "ip"},
		{name: "IPv6", line: "2001:DB8::1", wantRules: []string{"prefix 2001:db8::1/128"}, wantFormat: "ip"},
		{name: "IPv4-mapped", line: "::ffff:192.0.2.1", wantRules: []string{"prefix 192.0.2.1/32"}, wantFormat: "ip"},
		{name: "zoned address", line: "fe80::1%eth0", wantWhy: whyZone},
		{name: "bad IPv4", line: "300.1.1.1", wantWhy: whyAddr},
		{name: "bad IPv6", line: "2001:db8:::1", wantWhy: whyAddr},
		{name: "name with port", line: "evil.example:8080", wantWhy: whyChar},

		// CIDRs.
		{name: "CIDR", line: "203.0.113.0/24", wantRules: []string{"prefix 203.0.113.0/24"}, wantFormat: "cidr"},
		{name: "CIDR host bits masked", line: "203.0.113.7/24", wantRules: []string{"prefix 203.0.113.0/24"}, wantFormat: "cidr"},
		{name: "CIDR Spamhaus", line: "1.10.16.0/20 ; SBL256894", wantRules: []string{"prefix 1.10.16.0/20 #SBL256894"}, wantFormat: "cidr"},
		{name: "CIDR trailing space", line: "1.10.16.0/20 ", wantRules: []string{"prefix 1.10.16.0/20"}, wantFormat: "cidr"},
		{name: "CIDR IPv6", line: "2a12:2640::/29 ", wantRules: []string{"prefix 2a12:2640::/29"}, wantFormat: "cidr"},
		{name: "CIDR /32", line: "192.0.2.1/32", wantRules: []string{"prefix 192.0.2.1/32"}, wantFormat: "cidr"},
		{name: "CIDR IPv4-mapped", line: "::ffff:192.0.2.0/120", wantRules: []string{"prefix 192.0.2.0/24"}, wantFormat: "cidr"},
		{name: "CIDR too long", line: "203.0.113.0/33", wantWhy: whyCIDR},
		{name: "CIDR no bits", line: "203.0.113.0/", wantWhy: whyCIDR},
		{name: "CIDR zoned", line: "fe80::%eth0/64", wantWhy: whyCIDR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			line := []byte(tt.line)
			c := &collect{}
			r := parseLine(line, c)
			if !slices.Equal(tt.wantRules, c.rules) {
				t.Errorf("parseLine(%q) rules = %q, want %q", tt.line, c.rules, tt.wantRules)
			}
			if got := r.f.String(); got != tt.wantFormat {
				t.Errorf("parseLine(%q) format = %q, want %q", tt.line, got, tt.wantFormat)
			}
			if r.why != tt.wantWhy {
				t.Errorf("parseLine(%q) why = %q, want %q", tt.line, r.why, tt.wantWhy)
			}
			if r.rules != len(c.rules) {
				t.Errorf("parseLine(%q) rules = %d, handed over %d", tt.line, r.rules, len(c.rules))
			}
			if r.why != "" && len(r.tok) == 0 {
				t.Errorf("parseLine(%q) skipped without the text it is about", tt.line)
			}
			if r.why != "" && string(line) != tt.line {
				t.Errorf("parseLine(%q) changed a skipped line to %q", tt.line, line)
			}
		})
	}
}

// name253 is a valid name of exactly 253 bytes.
var name253 = strings.Repeat(strings.Repeat("a", 62)+".", 4)[:250] + ".ex"

func TestName253(t *testing.T) {
	if len(name253) != 253 {
		t.Fatalf("len(name253) = %d", len(name253))
	}
}

func TestFormatString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		f    format
		want string
	}{
		{0, ""},
		{fmtDomain, "domain"},
		{fmtCIDR | fmtDomain, "domain+cidr"},
		{fmtIP | fmtHosts | fmtWildcard, "hosts+wildcard+ip"},
		{fmtDomain | fmtHosts | fmtAdblock | fmtWildcard | fmtIP | fmtCIDR, "domain+hosts+adblock+wildcard+ip+cidr"},
	}
	for _, tt := range tests {
		if got := tt.f.String(); got != tt.want {
			t.Errorf("format(%b).String() = %q, want %q", tt.f, got, tt.want)
		}
	}
}

func TestParseMixedFile(t *testing.T) {
	t.Parallel()
	data := "! adblock header\n" +
		"# hosts header\n" +
		"evil.example\n" +
		"0.0.0.0 hosts.example # note\n" +
		"127.0.0.1 localhost\n" +
		"||adblock.example^\n" +
		"||a.example^$third-party\n" +
		"*.wild.example\n" +
		"192.0.2.1\n" +
		"203.0.113.0/24 ; SBL1\r\n" +
		"@@||allowed.example^\n" +
		"com\n" +
		"EVIL.example" // no final newline
	c, p, err := parseBytes("mixed.txt", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	wantRules := []string{
		"plain evil.example",
		"plain hosts.example #note",
		"adblock adblock.example",
		"wildcard wild.example",
		"prefix 192.0.2.1/32",
		"prefix 203.0.113.0/24 #SBL1",
		"plain evil.example",
	}
	if !slices.Equal(wantRules, c.rules) {
		t.Errorf("rules = %q, want %q", c.rules, wantRules)
	}
	if got, want := p.formats.String(), "domain+hosts+adblock+wildcard+ip+cidr"; got != want {
		t.Errorf("format = %q, want %q", got, want)
	}
	wantErrs := []string{
		`mixed.txt:7: unsupported adblock rule "||a.example^$third-party"`,
		`mixed.txt:11: unsupported adblock rule "@@||allowed.example^"`,
		`mixed.txt:12: single label "com"`,
	}
	if !slices.Equal(wantErrs, p.errs) {
		t.Errorf("errors = %q, want %q", p.errs, wantErrs)
	}
	if p.skipped != 3 || p.rules != 7 {
		t.Errorf("skipped, rules = %d, %d; want 3, 7", p.skipped, p.rules)
	}
}

func TestParseErrorsCapped(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range 8 {
		fmt.Fprintf(&b, "bad%d\n", i)
	}
	b.WriteString("good.example\n")
	_, p, err := parseBytes("x.txt", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if p.skipped != 8 {
		t.Errorf("skipped = %d, want 8", p.skipped)
	}
	want := []string{
		`x.txt:1: single label "bad0"`,
		`x.txt:2: single label "bad1"`,
		`x.txt:3: single label "bad2"`,
		`x.txt:4: single label "bad3"`,
		`x.txt:5: single label "bad4"`,
	}
	if !slices.Equal(want, p.errs) {
		t.Errorf("errors = %q, want %q", p.errs, want)
	}
}

func TestParseLongLines(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", maxLine+10)
	tests := []struct {
		name      string
		data      string
		wantRules []string
		wantErrs  []string
		wantErr   string
	}{
		{
			name:      "long line skipped",
			data:      "a.example\n" + long + "\nb.example\n",
			wantRules: []string{"plain a.example", "plain b.example"},
			wantErrs:  []string{"x.txt:2: line too long"},
		},
		{
			name:      "long last line",
			data:      "a.example\n" + long,
			wantRules: []string{"plain a.example"},
			wantErrs:  []string{"x.txt:2: line too long"},
		},
		{
			name:      "line just fits",
			data:      strings.Repeat(" ", maxLine-len("a.example\n")) + "a.example\nb.example\n",
			wantRules: []string{"plain a.example", "plain b.example"},
		},
		{
			name:      "long line name too long",
			data:      strings.Repeat("a.", 200) + "example\n",
			wantErrs:  []string{`x.txt:1: name too long "` + strings.Repeat("a.", 38) + `a...` + `"`},
			wantRules: nil,
		},
		{
			name:    "NUL in a long line",
			data:    "a.example\n" + long + "\x00" + long + "\n",
			wantErr: "x.txt:2: binary file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, p, err := parseBytes("x.txt", []byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(tt.wantRules, c.rules) {
				t.Errorf("rules = %q, want %q", c.rules, tt.wantRules)
			}
			if !slices.Equal(tt.wantErrs, p.errs) {
				t.Errorf("errors = %q, want %q", p.errs, tt.wantErrs)
			}
		})
	}
}
