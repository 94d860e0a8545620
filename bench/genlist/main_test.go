package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Parallel()
	out := filepath.Join(t.TempDir(), "list.txt")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-domains", "200", "-ips", "30", "-seed", "5", "-o", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 231 {
		t.Errorf("%d lines, want 231 (header, 200 names, 30 addresses)", n)
	}
	stdout.Reset()
	if code := run([]string{"-domains", "200", "-ips", "30", "-seed", "5"}, &stdout, &stderr); code != 0 || stdout.String() != string(b) {
		t.Errorf("stdout differs from the file (exit %d)", code)
	}
}

func TestRunUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
	}{
		{"unknown flag", []string{"-x"}},
		{"negative", []string{"-domains", "-1"}},
		{"argument", []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
		})
	}
}
