package feeds

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/sinkd/sinkd/zones"
)

// errBinary means a body holds a NUL byte: it is not a list.
var errBinary = errors.New("feeds: binary body")

// maxLine is the longest line a list body may hold; longer lines are
// skipped, as package zones skips them.
const maxLine = 64 << 10

// lineWriter writes the rule lines of a converted feed, counting rules the
// way package zones will when it loads the file. Lines that hold no rule
// are dropped.
type lineWriter struct {
	w       *bufio.Writer
	rules   int
	skipped int
	scratch []byte
}

// line writes b (without line break) if it holds a rule.
func (lw *lineWriter) line(b []byte) error {
	lw.scratch = append(lw.scratch[:0], b...)
	n, skipped := zones.LineRules(lw.scratch)
	if skipped {
		lw.skipped++
	}
	if n == 0 {
		return nil
	}
	lw.rules += n
	if _, err := lw.w.Write(bytes.TrimSpace(b)); err != nil {
		return err
	}
	return lw.w.WriteByte('\n')
}

// convertLines copies the rule lines of a list in the line formats of
// package zones (plain, hosts, adblock, wildcard, addresses, CIDRs).
func convertLines(r io.Reader, lw *lineWriter) error {
	br := bufio.NewReaderSize(r, maxLine)
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		if first {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // UTF-8 BOM, as zones strips it
		}
		if err == bufio.ErrBufferFull {
			for err == bufio.ErrBufferFull {
				if bytes.IndexByte(line, 0) >= 0 {
					return errBinary
				}
				line, err = br.ReadSlice('\n')
			}
			if bytes.IndexByte(line, 0) >= 0 { // the long line's last piece
				return errBinary
			}
			lw.skipped++
			line = nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return errBinary
		}
		if len(line) > 0 {
			if err := lw.line(line); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// convertCSV copies one column of a CSV export. column is a header name or
// a 1-based index ("" = 1). Lines starting with '#' are comments.
func convertCSV(r io.Reader, column string, lw *lineWriter) error {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	cr.ReuseRecord = true
	idx := 0
	byName := false
	if column != "" {
		if n, err := strconv.Atoi(column); err == nil && n >= 1 {
			idx = n - 1
		} else {
			byName = true
		}
	}
	first := true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && !errors.Is(pe.Err, io.ErrUnexpectedEOF) {
				lw.skipped++
				continue
			}
			return fmt.Errorf("feeds: csv: %w", err)
		}
		if first && byName {
			first = false
			idx = -1
			for i, h := range rec {
				if strings.EqualFold(strings.TrimSpace(h), column) {
					idx = i
					break
				}
			}
			if idx < 0 {
				return fmt.Errorf("feeds: csv: no column %q in header %q", column, strings.Join(rec, ","))
			}
			continue
		}
		first = false
		if idx >= len(rec) {
			lw.skipped++
			continue
		}
		v := strings.TrimSpace(rec[idx])
		if strings.ContainsAny(v, "\x00") {
			return errBinary
		}
		if err := lw.line([]byte(v)); err != nil {
			return err
		}
	}
}

// stixObject holds the fields of a STIX 2.1 object that feeds reads.
type stixObject struct {
	Type           string   `json:"type"`
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	Labels         []string `json:"labels"`
	IndicatorTypes []string `json:"indicator_types"`
	Pattern        string   `json:"pattern"`
	PatternType    string   `json:"pattern_type"`
	ValidUntil     string   `json:"valid_until"`
	Revoked        bool     `json:"revoked"`
}

// envelope is what decodeObjects found besides the objects: a TAXII
// envelope's paging fields.
type envelope struct {
	More bool
	Next string
}

// decodeObjects streams a JSON object holding an "objects" array (a STIX
// bundle or a TAXII envelope), handing each object to fn without holding
// the whole document.
func decodeObjects(r io.Reader, fn func(*stixObject) error) (envelope, error) {
	var env envelope
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return env, fmt.Errorf("feeds: json: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return env, errors.New("feeds: json: not an object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return env, fmt.Errorf("feeds: json: %w", err)
		}
		key, _ := tok.(string)
		switch key {
		case "objects":
			tok, err := dec.Token()
			if err != nil {
				return env, fmt.Errorf("feeds: json: %w", err)
			}
			if tok == nil {
				continue
			}
			if d, ok := tok.(json.Delim); !ok || d != '[' {
				return env, errors.New("feeds: json: objects is not an array")
			}
			for dec.More() {
				var o stixObject
				if err := dec.Decode(&o); err != nil {
					return env, fmt.Errorf("feeds: json: object: %w", err)
				}
				if err := fn(&o); err != nil {
					return env, err
				}
			}
			if _, err := dec.Token(); err != nil {
				return env, fmt.Errorf("feeds: json: %w", err)
			}
		case "more":
			if err := dec.Decode(&env.More); err != nil {
				return env, fmt.Errorf("feeds: json: more: %w", err)
			}
		case "next":
			var v any
			if err := dec.Decode(&v); err != nil {
				return env, fmt.Errorf("feeds: json: next: %w", err)
			}
			switch n := v.(type) {
			case string:
				env.Next = n
			case float64:
				env.Next = strconv.FormatFloat(n, 'f', -1, 64)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return env, fmt.Errorf("feeds: json: %w", err)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return env, fmt.Errorf("feeds: json: %w", err)
	}
	return env, nil
}

// indicatorLines returns the rule lines of a STIX indicator: one per value
// its pattern compares, each with the indicator's id, name and labels as
// its note. live is false for an object that is no rule: not an indicator,
// revoked, expired, or with a pattern that is not one OR of '=' comparisons
// on domain-name, ipv4-addr, ipv6-addr or url values.
func indicatorLines(o *stixObject, now time.Time) (lines []string, live bool) {
	if o.Type != "indicator" || o.PatternType != "stix" || o.Revoked {
		return nil, false
	}
	if o.ValidUntil != "" {
		t, err := time.Parse(time.RFC3339Nano, o.ValidUntil)
		if err != nil || !t.After(now) {
			return nil, false
		}
	}
	values, ok := parsePattern(o.Pattern)
	if !ok {
		return nil, false
	}
	note := indicatorKey(o.ID)
	if o.Name != "" {
		note += " " + o.Name
	}
	labels := append(append([]string(nil), o.Labels...), o.IndicatorTypes...)
	if len(labels) > 0 {
		note += " [" + strings.Join(labels, ",") + "]"
	}
	note = cleanNote(note)
	if len(note) > maxNote {
		i := maxNote
		for i > 0 && !utf8.RuneStart(note[i]) {
			i--
		}
		note = note[:i]
	}
	for _, v := range values {
		lines = append(lines, v+" # "+note)
	}
	return lines, true
}

// maxNote bounds the note of an indicator's rule line (its id, name and
// labels), so that the line stays far below maxLine and is not skipped.
const maxNote = 1024

// maxID bounds an indicator id kept in a TAXII feed file (STIX ids are
// "type--UUID", 48 bytes).
const maxID = 256

// indicatorKey is the form of an indicator's id that starts the note of its
// rule lines and under which a TAXII feed file keeps them (readFile reads
// it back as the note's first word): blanks and control characters become
// '_'. It is "" for an id that is empty or longer than maxID.
func indicatorKey(id string) string {
	if len(id) > maxID {
		return ""
	}
	return strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f || unicode.IsSpace(r) {
			return '_'
		}
		return r
	}, id)
}

// cleanNote keeps a note on one line.
func cleanNote(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// parsePattern returns the values of a STIX pattern that is one bracketed
// OR of '=' comparisons on domain-name:value, ipv4-addr:value,
// ipv6-addr:value or url:value (for url, its host).
func parsePattern(p string) ([]string, bool) {
	p = strings.TrimSpace(p)
	if len(p) < 2 || p[0] != '[' || p[len(p)-1] != ']' {
		return nil, false
	}
	s := p[1 : len(p)-1]
	var out []string
	for {
		s = strings.TrimLeft(s, " \t\r\n")
		i := strings.IndexAny(s, " \t=")
		if i <= 0 {
			return nil, false
		}
		path := s[:i]
		s = strings.TrimLeft(s[i:], " \t\r\n")
		if !strings.HasPrefix(s, "=") {
			return nil, false
		}
		s = strings.TrimLeft(s[1:], " \t\r\n")
		val, rest, ok := quoted(s)
		if !ok {
			return nil, false
		}
		v, ok := patternValue(path, val)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		s = strings.TrimLeft(rest, " \t\r\n")
		if s == "" {
			return out, true
		}
		after, ok := strings.CutPrefix(s, "OR")
		if !ok || after == "" || !strings.ContainsRune(" \t\r\n", rune(after[0])) {
			return nil, false
		}
		s = after
	}
}

// quoted reads a single-quoted STIX string ('\” and '\\' escaped).
func quoted(s string) (val, rest string, ok bool) {
	if !strings.HasPrefix(s, "'") {
		return "", "", false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 >= len(s) {
				return "", "", false
			}
			i++
			b.WriteByte(s[i])
		case '\'':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return "", "", false
}

// patternValue maps an object path and its value to a rule token.
func patternValue(path, val string) (string, bool) {
	val = strings.TrimSpace(val)
	if val == "" || strings.ContainsAny(val, " \t\r\n#;") {
		return "", false
	}
	switch path {
	case "domain-name:value":
		return strings.ToLower(strings.TrimSuffix(val, ".")), true
	case "ipv4-addr:value":
		if pfx, err := netip.ParsePrefix(val); err == nil && pfx.Addr().Is4() {
			return pfx.String(), true
		}
		if a, err := netip.ParseAddr(val); err == nil && a.Is4() {
			return a.String(), true
		}
	case "ipv6-addr:value":
		if pfx, err := netip.ParsePrefix(val); err == nil && pfx.Addr().Is6() {
			return pfx.String(), true
		}
		if a, err := netip.ParseAddr(val); err == nil && a.Is6() && a.Zone() == "" {
			return a.String(), true
		}
	case "url:value":
		u, err := url.Parse(val)
		if err != nil || u.Hostname() == "" {
			return "", false
		}
		h := strings.ToLower(strings.TrimSuffix(u.Hostname(), "."))
		if a, err := netip.ParseAddr(h); err == nil {
			if a.Zone() != "" {
				return "", false
			}
			return a.Unmap().String(), true
		}
		return h, true
	}
	return "", false
}

// convertSTIX copies the rules of a STIX 2.1 bundle's live indicators.
func convertSTIX(r io.Reader, now time.Time, lw *lineWriter) error {
	_, err := decodeObjects(r, func(o *stixObject) error {
		lines, live := indicatorLines(o, now)
		if !live && o.Type == "indicator" {
			lw.skipped++
		}
		for _, l := range lines {
			if err := lw.line([]byte(l)); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}
