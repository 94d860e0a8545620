package zones

import (
	"io"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// STUB: signatures are the contract with cmd/sinkd; bodies are placeholders.

// Result is the outcome of parsing one list file.
type Result struct {
	Source *sinkhole.Source // always set: name, path, counts, errors
	Rules  *sinkhole.Rules  // nil when the file failed
	Status string           // "ok", "failed" or "kept-last-good"
	Err    error            // why the file failed, naming file and line
	Took   time.Duration    // parse + compile time
}

// ParseFile parses and compiles one list file. name is its path relative to
// zones.dir (or the path as given to `sinkd check`); def is the action of
// files without a directive.
func ParseFile(path, name string, def sinkhole.Action) Result {
	return Result{Source: &sinkhole.Source{Name: name, Path: path}, Status: "failed"}
}

// LoadDir parses every list file below dir (skipping hidden and backup
// files), sorted by name.
func LoadDir(dir string, def sinkhole.Action) ([]Result, error) { return nil, nil }

// Compile builds a Policy from the results that have rules.
func Compile(s sinkhole.Settings, results []Result) *sinkhole.Policy {
	var rs []*sinkhole.Rules
	for _, r := range results {
		if r.Rules != nil {
			rs = append(rs, r.Rules)
		}
	}
	return sinkhole.NewPolicy(s, rs)
}

// WriteCheck prints `sinkd check` output: format "text" or "json".
func WriteCheck(w io.Writer, format string, results []Result) error { return nil }
