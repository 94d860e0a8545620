package zones

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine running
// (a watcher not stopped, a read that never returned).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
