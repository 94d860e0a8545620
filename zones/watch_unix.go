//go:build unix

package zones

import (
	"io/fs"
	"syscall"
)

// openNonblock opens list files without blocking: opening a named pipe
// that took a list's place (after it was checked) must not wait for a
// writer. The open file is checked again before it is read.
const openNonblock = syscall.O_NONBLOCK

// fileID returns the device and inode of a file.
func fileID(fi fs.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // int32 on some systems
	}
	return 0, 0
}
