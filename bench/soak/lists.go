package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/sinkd/sinkd/internal/synth"
)

// versions are the versions of the replaced list: the base list (from
// internal/synth) less a window of churn domains that moves with each
// version, plus churn domains of the version's own. The first hit
// domains are in every version.
type versions struct {
	base  []string
	hit   []string
	churn int
}

func newVersions(domains, hit, churn int) *versions {
	base := synth.DomainList(1, domains)
	return &versions{base: base, hit: base[:hit], churn: churn}
}

// removed is the window of base domains version k leaves out (none for
// version 0).
func (v *versions) removed(k int) []string {
	if k == 0 {
		return nil
	}
	span := len(v.base) - len(v.hit) - v.churn
	from := len(v.hit) + (k*7919)%span
	return v.base[from : from+v.churn]
}

// added are the domains only version k holds (none for version 0).
func (v *versions) added(k int) []string {
	if k == 0 {
		return nil
	}
	return synth.DomainList(1000+uint64(k), v.churn)
}

// names is version k's rules, in file order.
func (v *versions) names(k int) []string {
	rm := v.removed(k)
	out := make([]string, 0, len(v.base)+v.churn)
	for _, d := range v.base {
		if len(rm) > 0 && d == rm[0] {
			rm = rm[1:]
			continue
		}
		out = append(out, d)
	}
	return append(out, v.added(k)...)
}

// write writes version k to path and returns its SHA-256 (hex).
func (v *versions) write(path string, k int) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<16)
	fmt.Fprintf(w, "# soak list, version %d\n", k)
	for _, d := range v.names(k) {
		_, _ = w.WriteString(d)
		_ = w.WriteByte('\n')
	}
	err = w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return hex.EncodeToString(h.Sum(nil)), err
}

// blocked reports whether name or a parent of it is in set.
func blocked(set map[string]bool, name string) bool {
	for {
		if set[name] {
			return true
		}
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return false
		}
		name = name[i+1:]
	}
}
