//go:build !unix

package zones

import "io/fs"

// fileID returns the device and inode of a file: unknown here, so change
// detection relies on size and modification time (and on events).
func fileID(fs.FileInfo) (dev, ino uint64) { return 0, 0 }
