package sinkhole

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// FuzzEvidenceTamper edits one byte of a valid hit log (replace, insert or
// delete at any offset): Verify must notice. The edited log may verify
// only to a different result (fewer records, another final hash, an
// incomplete last line), never to the original one: the chain proves the
// log unchanged relative to its final hash. FuzzEvidenceVerify feeds arbitrary bytes; this target starts
// from a chain that verifies, which random bytes never reach.
func FuzzEvidenceTamper(f *testing.F) {
	orig, err := os.ReadFile(filepath.Join("testdata", "evidence", "sample.jsonl"))
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	seg := filepath.Join(dir, "hits-20250314T150926Z-000000000001.jsonl")
	if err := os.WriteFile(seg, orig, 0o640); err != nil {
		f.Fatal(err)
	}
	want, err := Verify(context.Background(), dir, nil)
	if err != nil || want.Records == 0 || want.Incomplete {
		f.Fatalf("the sample does not verify: %+v, %v", want, err)
	}
	f.Add(uint16(0), byte('['), uint8(0))                                      // not JSON
	f.Add(uint16(bytes.Index(orig, []byte(`"seq":2`))+6), byte('3'), uint8(0)) // seq
	f.Add(uint16(bytes.IndexByte(orig, '\n')), byte(' '), uint8(1))            // blank before the break
	f.Add(uint16(len(orig)), byte('^'), uint8(1))                              // a byte after the last line
	f.Add(uint16(len(orig)-1), byte(0), uint8(2))                              // the last newline
	f.Add(uint16(bytes.Index(orig, []byte(`"qname":"`))+9), byte('W'), uint8(0))
	f.Fuzz(func(t *testing.T, pos uint16, val byte, op uint8) {
		p := int(pos) % (len(orig) + 1)
		var b []byte
		switch op % 3 {
		case 0: // replace
			if p == len(orig) || orig[p] == val {
				return
			}
			b = bytes.Clone(orig)
			b[p] = val
		case 1: // insert
			b = append(append(append([]byte(nil), orig[:p]...), val), orig[p:]...)
		case 2: // delete
			if p == len(orig) {
				return
			}
			b = append(append([]byte(nil), orig[:p]...), orig[p+1:]...)
		}
		if err := os.WriteFile(seg, b, 0o640); err != nil {
			t.Fatal(err)
		}
		got, err := Verify(context.Background(), dir, nil)
		// Bytes after the last newline are an incomplete line (a write in
		// progress or torn): reported as such, not counted.
		if err == nil && got.Records == want.Records && got.FinalHash == want.FinalHash && !got.Incomplete {
			t.Fatalf("op %d at %d (%q) not detected: %+v\n%s", op%3, p, val, got, b)
		}
	})
}
