// Package zones owns list files: per-line format detection, the parsers
// (plain domains, hosts, adblock, wildcards, addresses, CIDRs), the first-line
// directive, and compiling the files of zones.dir into a sinkhole.Policy.
// Later it also owns the drop-directory watcher and RPZ zone files.
//
// It must not know how queries are answered: it only hands sinkhole Sources.
package zones
