// Package feeds keeps subscriptions to threat feeds: list URLs (plain,
// hosts, adblock, CIDR lists), CSV exports, STIX 2.1 bundles and TAXII 2.1
// collections. A feed is fetched (conditional requests, gzip, a size limit
// enforced while streaming, timeouts and retries), converted to the plain
// line format of package zones, checked, and written atomically to
// zones.dir/feeds/<name>.txt, where the zones watcher picks it up.
//
// feeds reaches the policy only through those files: it never builds a
// Policy and knows nothing of the resolver. A failed fetch, an HTTP error,
// a truncated body or a body with zero rules never replaces the file in
// place (keep-last-good); a feed that shrinks by more than its max_shrink
// is held back until `sinkd feeds update -force NAME`. Per-feed state (last
// check, success, error, ETag) lives in zones.dir/feeds/.state.json, shared
// by `sinkd serve` and `sinkd feeds`.
package feeds
