package feeds

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

func FuzzCSV(f *testing.F) {
	f.Add([]byte("# c\n\"a\",\"dst_ip\"\n\"x\",\"192.0.2.1\"\n"), "dst_ip")
	f.Add([]byte("a,b\n1,evil.example\n\"unterminated\n"), "2")
	f.Fuzz(func(t *testing.T, body []byte, column string) {
		var out bytes.Buffer
		lw := &lineWriter{w: bufio.NewWriter(&out)}
		_ = convertCSV(bytes.NewReader(body), column, lw)
		lw.w.Flush()
		checkLines(t, out.String(), lw.rules)
	})
}

func FuzzSTIX(f *testing.F) {
	f.Add([]byte(stixBundle))
	f.Add([]byte(`{"more":true,"next":3,"objects":[{"type":"indicator","pattern_type":"stix","pattern":"[url:value = 'http://[::1]/']"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var out bytes.Buffer
		lw := &lineWriter{w: bufio.NewWriter(&out)}
		_ = convertSTIX(bytes.NewReader(body), time.Unix(1e9, 0), lw)
		lw.w.Flush()
		checkLines(t, out.String(), lw.rules)
	})
}

func FuzzPattern(f *testing.F) {
	f.Add("[domain-name:value = 'evil.example' OR ipv4-addr:value = '10.0.0.0/8']")
	f.Add(`[url:value = 'http://a\'b.example/']`)
	f.Fuzz(func(t *testing.T, p string) {
		values, ok := parsePattern(p)
		if ok && len(values) == 0 {
			t.Fatal("ok with no values")
		}
		for _, v := range values {
			if strings.ContainsAny(v, " \t\r\n#;") {
				t.Fatalf("value %q would break its line", v)
			}
		}
	})
}

func FuzzLines(f *testing.F) {
	f.Add([]byte("# c\nevil.example\n0.0.0.0 a.example b.example\n||c.example^\n203.0.113.0/24 ; SBL1\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		var out bytes.Buffer
		lw := &lineWriter{w: bufio.NewWriter(&out)}
		if err := convertLines(bytes.NewReader(body), lw); err != nil && err != errBinary {
			t.Fatal(err)
		}
		lw.w.Flush()
		checkLines(t, out.String(), lw.rules)
	})
}

// checkLines: every line written is one line, and the lines re-read as a
// list hold exactly the rules counted.
func checkLines(t *testing.T, out string, rules int) {
	t.Helper()
	var again bytes.Buffer
	lw := &lineWriter{w: bufio.NewWriter(&again)}
	if err := convertLines(strings.NewReader(out), lw); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if lw.rules != rules {
		t.Fatalf("re-read %d rules, counted %d:\n%s", lw.rules, rules, out)
	}
}

// TestConvertLinesEdges: a body starting with a UTF-8 byte-order mark keeps
// its first rule (zones strips the mark too), and a NUL in the last piece
// of an over-long line still makes the body binary.
func TestConvertLinesEdges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		body      string
		wantRules int
		wantErr   error
	}{
		{name: "BOM", body: "\xef\xbb\xbfevil.example\nbad.example\n", wantRules: 2},
		{name: "NUL at the end of a long line", body: "evil.example\n" + strings.Repeat("x", maxLine+10) + "\x00\nbad.example\n", wantErr: errBinary},
		{name: "long line skipped", body: "evil.example\n" + strings.Repeat("x", maxLine+10) + "\nbad.example\n", wantRules: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			lw := &lineWriter{w: bufio.NewWriter(&out)}
			err := convertLines(strings.NewReader(tt.body), lw)
			if err != tt.wantErr || (err == nil && lw.rules != tt.wantRules) {
				t.Errorf("convertLines = %v with %d rules, want %v with %d", err, lw.rules, tt.wantErr, tt.wantRules)
			}
		})
	}
}
