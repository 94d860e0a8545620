// Package upstream owns the conversation with upstream resolvers: plain DNS
// over UDP (retried over TCP when truncated) and TCP, DNS over TLS (RFC 7858)
// and DNS over HTTPS (RFC 8484); the choice among several upstreams
// (strategy "fastest" or "parallel"); anti-spoofing checks on replies; and
// the readiness probe.
//
// It must not know about caching, policy or clients: package resolver asks it
// one question at a time.
//
// # Transports
//
// UDP: every query uses a fresh connected socket (kernel-chosen random
// source port) and a random ID from crypto/rand; the transport reads until
// the deadline past packets with a wrong ID, a wrong question (name
// compared ignoring ASCII case, type, class), a wrong opcode or no QR bit,
// and unparsable ones. A reply with TC set is asked again over TCP.
//
// TCP and TLS: one long-lived connection per upstream, pipelined (IDs
// unique on the connection, one reader goroutine matching replies by ID
// and question; a reply with another question is dropped and the query
// keeps waiting), replaced when it dies; a query that fails because a
// reused connection died is retried once on a new one. A reply with the
// query's ID and question that does not parse ends the connection: the
// stream is out of step (a short length prefix) or the server broken.
//
// Every transport rejects a reply holding fewer records than its header
// counts (unless TC is set): miekg/dns would take a message cut after its
// question for an empty answer. A connection that lets a query's
// deadline pass without delivering any reply is dropped. Dials are not
// cut short by the query that triggered them (only by Config.Timeout), so
// a slow handshake still serves the next query. TLS uses a session cache.
//
// HTTPS: POST application/dns-message with ID 0, HTTP/2 when offered.
//
// Every reply handed back carries the caller's ID and question section.
//
// # Choosing upstreams
//
// Each upstream has a smoothed RTT (EWMA, weight 1/4) and a count of
// consecutive failures. Upstreams are ranked: those in backoff (after a
// timeout, a network error, SERVFAIL, REFUSED or another non-answer rcode:
// 1s, doubling per consecutive failure, at most 30s) after the others;
// then by smoothed RTT, halved for every minute it was not refreshed, so
// that an upstream left aside is asked again now and then; unmeasured
// upstreams first. Timeouts and errors feed the RTT at least 300ms, so a
// fast failure does not look fast. An upstream that lost a race adds the
// time it had taken as a lower bound.
//
// "fastest" asks the best upstream and asks the next one too when the
// first fails or its share of the remaining time R has passed:
// min(max(3*srtt, 300ms), R/2), R/2 while srtt is unknown; the last one
// gets all of R. Earlier tries are not abandoned: the first good reply
// (NOERROR or NXDOMAIN) from any of them wins and the others are
// cancelled. "parallel" starts with the best two at once.
//
// Run probes every upstream with ". NS" at start and every 10s until one
// answers (Ready), then probes only failing upstreams at that interval.
package upstream
