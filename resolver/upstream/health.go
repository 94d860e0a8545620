package upstream

import (
	"math"
	"sync"
	"time"
)

// Ranking and failover tuning; see the package comment.
const (
	// hedgeMin is the least time an upstream is given alone before the
	// next one is asked too.
	hedgeMin = 300 * time.Millisecond
	// rttDecay is the half-life of a smoothed RTT that is not refreshed:
	// an upstream left unused for a while (because it was slow or
	// failing) ranks better and better until it is asked again.
	rttDecay = time.Minute
	// backoffBase and backoffMax bound how long a failed upstream is
	// ranked after all others: 1s, 2s, 4s ... 30s for consecutive failures.
	backoffBase = time.Second
	backoffMax  = 30 * time.Second
)

// health is what the Pool knows about one upstream.
type health struct {
	mu      sync.Mutex
	srtt    time.Duration // smoothed RTT; 0 until measured
	sampled time.Time     // when srtt last changed
	fails   int           // consecutive failures
	until   time.Time     // ranked last until then
	down    bool          // last request got no reply
}

// rank returns the upstream's place: upstreams in backoff sort after all
// others, then by decayed smoothed RTT (unmeasured ones first, so every
// upstream gets measured).
func (h *health) rank(now time.Time) (backoff bool, score float64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	backoff = now.Before(h.until)
	if h.srtt == 0 {
		return backoff, 0
	}
	age := now.Sub(h.sampled)
	if age < 0 {
		age = 0
	}
	return backoff, float64(h.srtt) * math.Exp2(-float64(age)/float64(rttDecay))
}

// rtt returns the smoothed RTT (0 if unknown).
func (h *health) rtt() time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.srtt
}

// failing reports whether the last request failed.
func (h *health) failing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails > 0
}

// sample folds one RTT measurement into srtt (EWMA, weight 1/4).
// Callers hold mu.
func (h *health) sample(now time.Time, d time.Duration) {
	if h.srtt == 0 {
		h.srtt = d
	} else {
		h.srtt += (d - h.srtt) / 4
	}
	if h.srtt <= 0 {
		h.srtt = 1 // measured, however fast
	}
	h.sampled = now
}

// outcome records a request's result and returns the new srtt and whether
// the upstream's up/down state changed.
func (h *health) outcome(now time.Time, res string, elapsed time.Duration) (srtt time.Duration, changed bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	wasDown := h.down
	switch res {
	case resultOK:
		h.sample(now, elapsed)
		h.fails, h.until, h.down = 0, time.Time{}, false
	case resultServfail, resultRefused, resultRcode:
		// It answered, but not usefully: rank it last for a while.
		h.sample(now, elapsed)
		h.fail(now)
		h.down = false
	case resultTimeout, resultError:
		// Penalize: an upstream that fails fast (connection refused)
		// must not look fast.
		h.sample(now, max(elapsed, hedgeMin, h.srtt))
		h.fail(now)
		h.down = true
	case resultCanceled:
		// Another upstream won: elapsed is a lower bound of its RTT.
		if elapsed > h.srtt {
			h.sample(now, elapsed)
		}
	}
	return h.srtt, h.down != wasDown
}

// fail counts a consecutive failure and sets the backoff. Callers hold mu.
func (h *health) fail(now time.Time) {
	h.fails++
	d := backoffMax
	if h.fails <= 5 {
		d = min(backoffBase<<(h.fails-1), backoffMax)
	}
	h.until = now.Add(d)
}
