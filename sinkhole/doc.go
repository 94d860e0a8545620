// Package sinkhole owns policy decisions: the immutable Policy snapshot built
// from per-source rule sets, the verdicts of CheckQuery and CheckAnswer, and
// the answers synthesized for blocked queries. Later it also owns the
// evidence log.
//
// It must not know where rules come from (files, feeds, RPZ: package zones
// compiles them) nor how queries arrive (package resolver). It imports none of
// sinkd's other packages.
package sinkhole
