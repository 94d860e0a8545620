package zones

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// ListInfo is one list as /api/v1/lists shows it (and `sinkd check
// -format json`, which adds File and MS in CheckInfo).
type ListInfo struct {
	Name     string              `json:"name"`
	Path     string              `json:"path"`
	Format   string              `json:"format"` // formats seen, joined by "+"; "" when none
	Action   string              `json:"action"`
	Category string              `json:"category"`
	Rules    sinkhole.RuleCounts `json:"rules"`
	Skipped  int                 `json:"skipped"`
	Errors   []string            `json:"errors"` // never null; a failed file's reason first
	SHA256   string              `json:"sha256"`
	LoadedAt time.Time           `json:"loaded_at"`
	Status   string              `json:"status"`
}

// CheckInfo is one line of `sinkd check -format json`.
type CheckInfo struct {
	ListInfo
	File string `json:"file"` // the path checked
	MS   int64  `json:"ms"`   // parse + compile time, milliseconds
}

// ListInfo describes r as /api/v1/lists shows it.
func (r Result) ListInfo() ListInfo {
	s := r.Source
	errs := s.Errors
	if errs == nil {
		errs = []string{}
	}
	return ListInfo{
		Name:     s.Name,
		Path:     s.Path,
		Format:   s.Format,
		Action:   s.Action.String(),
		Category: s.Category,
		Rules:    s.Rules,
		Skipped:  s.Skipped,
		Errors:   errs,
		SHA256:   s.SHA256,
		LoadedAt: s.LoadedAt,
		Status:   r.Status,
	}
}

// CheckInfo describes r as `sinkd check -format json` prints it.
func (r Result) CheckInfo() CheckInfo {
	return CheckInfo{ListInfo: r.ListInfo(), File: r.Source.Path, MS: r.Took.Milliseconds()}
}

// WriteCheck prints `sinkd check` output. Format "text": one line per file,
//
//	FILE: ok|failed format=MIX rules domain=N wildcard=N ip=N cidr=N allow=N skipped=N sha256=HEX ms=N
//
// followed by that file's errors (a failed file's reason first, then the
// first skipped lines as FILE:LINE: reason), each indented by two spaces;
// "-" stands for an empty format or hash. Format "json": one CheckInfo
// object per line.
func WriteCheck(w io.Writer, format string, results []Result) error {
	bw := bufio.NewWriter(w)
	switch format {
	case "text", "":
		for _, r := range results {
			s := r.Source
			c := s.Rules
			fmt.Fprintf(bw, "%s: %s format=%s rules domain=%d wildcard=%d ip=%d cidr=%d allow=%d skipped=%d sha256=%s ms=%d\n",
				s.Name, r.Status, orDash(s.Format), c.Domain, c.Wildcard, c.IP, c.CIDR, c.Allow,
				s.Skipped, orDash(s.SHA256), r.Took.Milliseconds())
			for _, e := range s.Errors {
				fmt.Fprintf(bw, "  %s\n", e)
			}
		}
	case "json":
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		for _, r := range results {
			if err := enc.Encode(r.CheckInfo()); err != nil {
				return fmt.Errorf("zones: check: %w", err)
			}
		}
	default:
		return fmt.Errorf("zones: check: unknown format %q (want text or json)", format)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("zones: check: %w", err)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
