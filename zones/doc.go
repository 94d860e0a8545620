// Package zones owns list files: per-line format detection, the parsers
// (plain domains, hosts, adblock, wildcards, addresses, CIDRs), the first-line
// directive, compiling the files of zones.dir into a sinkhole.Policy, and
// the drop-directory Watcher that keeps that policy live (see Watcher).
// Later it also owns RPZ zone files.
//
// It must not know how queries are answered: it only hands sinkhole Sources
// and their rules (through sinkhole.Builder, which also counts them).
//
// # Lines
//
// Format is detected per line, so one file may mix formats. Source.Format
// names the formats seen, joined by "+" in this order:
//
//	domain    evil.example              (SyntaxPlain)
//	hosts     0.0.0.0 a.example b.example  (each name SyntaxPlain; the address is never a rule)
//	adblock   ||evil.example^ and ||evil.example^$important; ||192.0.2.1^ is an address rule
//	wildcard  *.evil.example            (SyntaxWildcard)
//	ip        192.0.2.1, 2001:db8::1    (IPv4-mapped addresses are unmapped)
//	cidr      203.0.113.0/24, also "203.0.113.0/24 ; SBL123"
//
// Blank lines and lines starting with '#', ';' or '!' are comments. '#' or
// ';' after white space starts an inline comment, kept (trimmed) as the
// note of the line's rules. Names are lower-cased and lose a final dot;
// they must have labels of 1 to 63 letters, digits, hyphens or underscores,
// at most 253 bytes, at least two labels ("single label" otherwise), and a
// top-level label that is not all digits. Punycode is kept as is; non-ASCII
// names are skipped. A CIDR with host bits set is masked (203.0.113.7/24
// is 203.0.113.0/24), as firewalls loading FireHOL or Spamhaus lists do. In
// hosts lines, localhost, localhost.localdomain, local, broadcasthost,
// 0.0.0.0 and ip6-* are neither rules nor skipped lines. A line is all or
// nothing: one invalid name skips the whole hosts line. Only ||name^ and
// ||name^$important are adblock rules; exceptions (@@), other modifiers,
// paths, regexps and cosmetic rules are skipped as "unsupported adblock
// rule". A wildcard of an address (*.192.0.2.1, as some generated lists
// hold) is skipped. Lines longer than 64 KiB are skipped as "line too
// long".
//
// # Files
//
// A first-line directive "# sinkd: action=nxdomain category=phishing" sets
// the file's action and category; an unknown key or action fails the file.
// Files under a directory named allow, or whose base name holds ".allow",
// are allowlists. Files ending .rpz or .zone fail with "RPZ not supported
// yet" until RPZ lands. A file holding a NUL byte fails as "binary file". A
// file with lines but not one valid rule fails; an empty file, or one of
// only comments (or hosts boilerplate), is a valid empty list. Skipped
// lines are counted; Source.Errors keeps at most five entries,
// "FILE:LINE: reason" (for a failed file its reason first). A file is read
// once, streaming, and hashed while it is parsed: memory does not grow with
// its size, only with its rules.
//
// A file larger than zones.max_file_size (DefaultMaxFileSize, 256 MiB)
// fails unread, "FILE: file too large (N > zones.max_file_size M)"; one
// that grows past it while it is read fails then. Only regular files are
// opened: a directory (or a visible symlink to one, which is not
// descended), named pipe, socket or device in a list's place fails without
// being read ("is a directory", "not a regular file (named pipe)"), and
// the file is opened non-blocking and checked again, so a named pipe
// swapped in cannot hang a reload. A dangling symlink fails naming its
// target. In the Watcher each of these keeps the list's last good version.
package zones
