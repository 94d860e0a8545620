// Package sinkhole owns policy decisions: the immutable Policy snapshot built
// from per-source rule sets, the verdicts of CheckQuery and CheckAnswer, and
// the answers synthesized for blocked queries. It also owns the evidence
// log (evidence*.go): the hash-chained hit log (Log, a Recorder), and its
// verifier (Verify) and search (SearchLog, FollowLog, HitsHandler).
//
// It must not know where rules come from (files, feeds, RPZ: package zones
// compiles them) nor how queries arrive (package resolver). It imports none of
// sinkd's other packages.
package sinkhole
