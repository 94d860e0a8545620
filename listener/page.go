package listener

import (
	"cmp"
	"html"
	"strings"

	"github.com/sinkd/sinkd/sinkhole"
)

// blockPage is the 403 page: what was blocked, by which list, and the
// reference to quote to the network's administrators.
func blockPage(instance string, ct *sinkhole.Contact) string {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Blocked by your network</title></head>\n<body>\n<h1>Blocked by your network</h1>\n<p>")
	b.WriteString(html.EscapeString(cmp.Or(ct.HTTP.Host, "This site")))
	b.WriteString(" is blocked by your network's DNS filter")
	if ct.List != "" {
		b.WriteString(" (list ")
		b.WriteString(html.EscapeString(ct.List))
		b.WriteString(")")
	}
	b.WriteString(".</p>\n")
	if ct.HitSeq != 0 {
		b.WriteString("<p>Reference: ")
		b.WriteString(html.EscapeString(reference(instance, ct.HitSeq)))
		b.WriteString("</p>\n")
	}
	b.WriteString("<p>If you think this is a mistake, contact your network's administrators and quote the reference.</p>\n</body></html>\n")
	return b.String()
}
