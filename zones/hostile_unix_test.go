//go:build unix

package zones

import (
	"syscall"
	"testing"
)

// mkfifo makes a named pipe at p; it reports false where there are none.
func mkfifo(t *testing.T, p string) bool {
	t.Helper()
	if err := syscall.Mkfifo(p, 0o640); err != nil {
		t.Fatal(err)
	}
	return true
}
