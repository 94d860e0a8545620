package zones

import (
	"net/netip"

	"github.com/sinkd/sinkd/sinkhole"
)

// LineRules parses one list line (without its line break) exactly as a line
// of a list file is parsed and returns how many rules it holds. skipped is
// true when the line is not a comment and holds no valid rule. It may
// lower-case the names of line in place. Package feeds uses it to count and
// validate the rules of a converted feed before the file is written.
func LineRules(line []byte) (rules int, skipped bool) {
	r := parseLine(line, countSink{})
	return r.rules, r.why != ""
}

// countSink discards the rules it is handed.
type countSink struct{}

func (countSink) domain([]byte, sinkhole.Syntax, string) {}
func (countSink) prefix(netip.Prefix, string)            {}
