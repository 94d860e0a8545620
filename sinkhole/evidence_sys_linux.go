package sinkhole

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// evDumpNeigh6 dumps the kernel's IPv6 neighbour table over netlink.
func evDumpNeigh6() ([]byte, error) {
	return syscall.NetlinkRIB(syscall.RTM_GETNEIGH, syscall.AF_INET6)
}

// evLockDir takes an exclusive lock on dir's hidden .lock file, so that two
// servers never append to one chain.
func evLockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("sinkhole: evidence: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if err == syscall.EWOULDBLOCK {
			return nil, fmt.Errorf("%w: %s", ErrLogLocked, dir)
		}
		return nil, fmt.Errorf("sinkhole: evidence: lock %s: %w", dir, err)
	}
	return func() { _ = f.Close() }, nil
}
