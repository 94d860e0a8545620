//go:build !linux

package sinkhole

import "errors"

// evDumpNeigh6 is Linux-only: elsewhere IPv6 clients get no mac.
func evDumpNeigh6() ([]byte, error) { return nil, errors.ErrUnsupported }

// evLockDir does not lock outside Linux.
func evLockDir(string) (func(), error) { return func() {}, nil }
