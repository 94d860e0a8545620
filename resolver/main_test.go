package resolver

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine the server starts has an owner that stops it: after all
// tests (each server shut down by its Cleanup), none may be left.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
