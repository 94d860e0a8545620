package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestConfigMaxFileSize checks zones.max_file_size: its default, a size,
// and the values refused.
func TestConfigMaxFileSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		yaml    string
		want    int64
		wantErr string
	}{
		{name: "default", yaml: "zones:\n  dir: x\n", want: 256 << 20},
		{name: "MiB", yaml: "zones:\n  max_file_size: 16MiB\n", want: 16 << 20},
		{name: "bytes", yaml: "zones:\n  max_file_size: 4096\n", want: 4096},
		{name: "zero", yaml: "zones:\n  max_file_size: 0\n", wantErr: "zones.max_file_size 0: want a positive size"},
		{name: "not a size", yaml: "zones:\n  max_file_size: 1GB\n", wantErr: `line 2: invalid size "1GB"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := loadYAML(t, tt.yaml)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("loadConfig error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.zonesMaxFileSize != tt.want {
				t.Errorf("zones.max_file_size = %d, want %d", c.zonesMaxFileSize, tt.want)
			}
		})
	}
}

func TestDocumentedMaxFileSize(t *testing.T) {
	t.Parallel()
	c, err := loadConfig("../../configs/sinkd.yaml", "")
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := buildConfig(defaultFile(), ""); d == nil || c.zonesMaxFileSize != d.zonesMaxFileSize {
		t.Errorf("configs/sinkd.yaml: zones.max_file_size %d, want the default", c.zonesMaxFileSize)
	}
}

// waitList polls /api/v1/lists until the list named name has status, for
// at most 10 s.
func (in *instance) waitList(t *testing.T, name, status string) apiList {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l := in.lists(t)[name]
		if l.Status == status {
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %s is %+v, want %s", name, l, status)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}

// TestReloadHostileFiles runs sinkd with a small zones.max_file_size:
// a list that grows past it keeps its good version, and so does the whole
// policy when zones.dir is removed, until the directory is back.
func TestReloadHostileFiles(t *testing.T) {
	t.Parallel()
	in := startReloadSinkd(t, map[string]string{"list.txt": "one.example\n", "keep.txt": "keep.example\n"}, "max_file_size: 1MiB")
	in.checkResolve(t, true, "one.example", "keep.example")

	// 2.4 MB of valid names: loaded, were it not for the bound.
	dropList(t, in.zonesDir, "list.txt", strings.Repeat("two.example\n", 200_000))
	l := in.waitList(t, "list.txt", "kept-last-good")
	want := "list.txt: file too large (2400000 > zones.max_file_size 1048576)"
	if len(l.Errors) == 0 || l.Errors[0] != want || l.Rules.Domain != 1 {
		t.Errorf("list.txt = %+v, want the good version's counts and %q", l, want)
	}
	in.checkResolve(t, true, "one.example")
	in.checkResolve(t, false, "two.example")

	// zones.dir removed: the policy in force stays. Moved away first, so
	// that it vanishes at once (rm -rf deletes the files first, and a
	// reload that ran in between would see every list deleted: see the
	// README); then deleted.
	gone := in.zonesDir + ".gone"
	if err := os.Rename(in.zonesDir, gone); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for v := metricValue(t, in, "sinkd_zones_dir_readable"); v != 0; v = metricValue(t, in, "sinkd_zones_dir_readable") {
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: sinkd_zones_dir_readable = %v, want 0", v)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
	in.checkResolve(t, true, "one.example", "keep.example")
	if !strings.Contains(in.log(), `msg="zones.dir cannot be read: the policy in force stays; watching for it to come back"`) {
		t.Errorf("no error logged for the missing zones.dir:\n%s", in.log())
	}

	// Back, without a SIGHUP.
	if err := os.Mkdir(in.zonesDir, 0o750); err != nil {
		t.Fatal(err)
	}
	dropList(t, in.zonesDir, "three.txt", "three.example\n")
	in.waitResolve(t, true, "three.example")
	in.waitResolve(t, false, "one.example", "keep.example")
}
