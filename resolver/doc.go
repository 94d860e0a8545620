// Package resolver owns the DNS front: UDP and TCP listeners, access control
// and rate limits, the query pipeline (policy, cache, upstream), the answer
// cache, and the wire-level fast path that answers cache hits without
// unpacking a message.
//
// It must not know where policy comes from: cmd/sinkd hands it each new
// sinkhole.Policy. It does not import package zones.
package resolver
