package feeds

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// Formats of a feed's body.
const (
	FormatAuto  = "auto"  // the line formats of package zones
	FormatCSV   = "csv"   // one column of a CSV export
	FormatSTIX  = "stix"  // a STIX 2.1 bundle
	FormatTAXII = "taxii" // a TAXII 2.1 collection's objects endpoint
)

// Defaults of a feed's optional fields.
const (
	DefaultInterval  = time.Hour
	DefaultMaxSize   = 256 << 20
	DefaultMaxShrink = 0.5
)

// Sentinel errors.
var (
	// ErrConfig means a feed's configuration is invalid.
	ErrConfig = errors.New("feeds: invalid feed")
	// ErrTooLarge means a body exceeded the feed's max_size.
	ErrTooLarge = errors.New("feeds: body larger than max_size")
	// ErrNoRules means a body held no valid rule (an HTML error page, an
	// empty file): the previous copy stays.
	ErrNoRules = errors.New("feeds: no valid rules")
	// ErrHeldBack means the feed shrank by more than max_shrink at once.
	ErrHeldBack = errors.New("feeds: held back")
	// ErrStatus means the server answered with an HTTP error status.
	ErrStatus = errors.New("feeds: HTTP status")
	// ErrUnknownFeed means no feed has the name asked for.
	ErrUnknownFeed = errors.New("feeds: unknown feed")
)

// Feed is one subscription.
type Feed struct {
	Name      string            // [a-z0-9][a-z0-9_-]*; the file is feeds/<Name>.txt
	URL       string            // https://, http:// or file://
	Format    string            // auto (default), csv, stix, taxii
	Column    string            // csv: header name or 1-based index (default 1)
	Interval  time.Duration     // between fetches (default 1h), with jitter
	Action    string            // the file's action directive ("" = sinkhole.action)
	Category  string            // the file's category directive
	Headers   map[string]string // extra request headers (values already expanded)
	MaxSize   int64             // body limit after Content-Encoding (default 256 MiB)
	MaxShrink float64           // fraction 0..1; 0 disables the shrink guard
}

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Validate checks f and fills in defaults. Errors name the feed.
func (f *Feed) Validate() error {
	if !nameRe.MatchString(f.Name) {
		return fmt.Errorf("%w: name %q: want [a-z0-9][a-z0-9_-]*", ErrConfig, f.Name)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w %q: %s", ErrConfig, f.Name, fmt.Sprintf(format, a...))
	}
	u, err := url.Parse(f.URL)
	if err != nil {
		return bad("url: %v", err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return bad("url %q: no host", f.URL)
		}
	case "file":
		if u.Path == "" {
			return bad("url %q: no path", f.URL)
		}
	default:
		return bad("url %q: want https://, http:// or file://", f.URL)
	}
	switch f.Format {
	case "":
		f.Format = FormatAuto
	case FormatAuto, FormatCSV, FormatSTIX:
	case FormatTAXII:
		if u.Scheme == "file" {
			return bad("format taxii needs an http(s) url")
		}
	default:
		return bad("format %q: want auto, csv, stix or taxii", f.Format)
	}
	if f.Column != "" && f.Format != FormatCSV {
		return bad("column applies to format csv only")
	}
	if n, err := strconv.Atoi(f.Column); err == nil && n < 1 {
		return bad("column %d: indexes start at 1", n)
	}
	if f.Interval == 0 {
		f.Interval = DefaultInterval
	}
	if f.Interval < time.Second {
		return bad("interval %v: want at least 1s", f.Interval)
	}
	if f.Action != "" {
		if _, err := sinkhole.ParseAction(f.Action); err != nil {
			return bad("action: %v", err)
		}
	}
	for _, s := range []string{f.Action, f.Category} {
		if !directiveRe.MatchString(s) {
			return bad("action and category: no spaces, '=' or '#' (%q)", s)
		}
	}
	for k := range f.Headers {
		if http.CanonicalHeaderKey(k) == "" || !headerRe.MatchString(k) {
			return bad("header name %q", k)
		}
	}
	if f.MaxSize == 0 {
		f.MaxSize = DefaultMaxSize
	}
	if f.MaxSize < 0 {
		return bad("max_size %d: want a positive size", f.MaxSize)
	}
	if f.MaxShrink < 0 || f.MaxShrink > 1 {
		return bad("max_shrink %v: want 0%%..100%%", f.MaxShrink)
	}
	return nil
}

var (
	directiveRe = regexp.MustCompile(`^[^\s=#]*$`)
	headerRe    = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)
