// Package upstream owns the conversation with upstream resolvers: plain DNS
// over UDP (retried over TCP when truncated) and TCP, DNS over TLS (RFC 7858)
// and DNS over HTTPS (RFC 8484); the choice among several upstreams
// (strategy "fastest" or "parallel"); anti-spoofing checks on replies; and
// the readiness probe.
//
// It must not know about caching, policy or clients: package resolver asks it
// one question at a time.
package upstream
