package sinkhole

import (
	"math/bits"
	"net/netip"
	"slices"
	"strings"
)

// Verdict is the outcome of a policy check. The zero Verdict means "not
// listed". It is returned by value and never allocates.
type Verdict struct {
	Trigger Trigger
	Action  Action
	Allowed bool    // an allowlist rule matched: the query (or this name/address) is exempt
	Source  *Source // the list whose rule decided
	Name    []byte  // qname/cname triggers: the name that matched (aliases the caller's input)
	Addr    netip.Addr
	rules   *Rules
	idx     int32 // name triggers: the rule's arena offset; ip triggers: the prefix length
}

// Hit reports whether a rule (block, log or allow) matched.
func (v *Verdict) Hit() bool { return v.Source != nil }

// Blocks reports whether the verdict changes the answer.
func (v *Verdict) Blocks() bool { return v.Source != nil && !v.Allowed && v.Action != ActionLog }

func (v *Verdict) isAddr() bool { return v.Trigger == TriggerIP || v.Trigger == TriggerClient }

// prefix is the matched rule of an address verdict.
func (v *Verdict) prefix() netip.Prefix {
	return netip.PrefixFrom(v.Addr, int(v.idx)).Masked()
}

// Rule renders the rule that matched in its list's syntax, lower-case:
// "evil.example", "*.evil.example", "||evil.example^",
// "||evil.example^$important", "203.0.113.7" or "203.0.113.0/24". It is ""
// for the zero Verdict.
func (v *Verdict) Rule() string { return string(v.AppendRule(nil)) }

// AppendRule appends what Rule returns to dst, without allocating when dst
// has room.
func (v *Verdict) AppendRule(dst []byte) []byte {
	switch {
	case v.rules == nil:
		return dst
	case v.isAddr():
		return appendPrefix(dst, v.prefix())
	}
	return v.rules.dom.appendRule(dst, uint32(v.idx))
}

// Note is the matched rule's inline comment, if any.
func (v *Verdict) Note() string {
	switch {
	case v.rules == nil:
		return ""
	case v.isAddr():
		return v.rules.ip.note(v.prefix())
	}
	return v.rules.dom.note(uint32(v.idx))
}

// Rules is one source's compiled, immutable rule set. Snapshots share it.
type Rules struct {
	src   *Source
	allow bool
	dom   *domainSet
	ip    *prefixSet
}

// Source is the list these rules came from.
func (r *Rules) Source() *Source { return r.src }

// Builder collects one source's rules; Build compiles them. A Builder is
// used by one goroutine and once.
type Builder struct {
	src     *Source
	dom     pendingDomains
	ip      []pendingPrefix
	ipNotes []string
}

// NewBuilder starts a rule set for src. src.Allow makes it an allowlist.
func NewBuilder(src *Source) *Builder { return &Builder{src: src} }

// AddDomain adds a domain rule: name is lower-case presentation format
// without the final dot, already validated. It matches the name and all its
// subdomains. note is the inline comment (may be empty). Names longer than
// 255 bytes are ignored, as are names beyond 4 GiB of them in one list.
func (b *Builder) AddDomain(name string, syn Syntax, note string) {
	b.addDomain(name, syn, modeTree, ActionNone, note)
}

// addDomain leaves room for RPZ: a match mode and a per-rule action
// (ActionNone: the source's).
func (b *Builder) addDomain(name string, syn Syntax, mode matchMode, act Action, note string) {
	b.dom.add(name, makeFlags(syn, mode, act), strings.Clone(note))
}

// AddPrefix adds an address (a full-length prefix) or CIDR rule. The prefix
// is masked; an IPv4-mapped IPv6 prefix is taken as IPv4. An invalid prefix
// is ignored.
func (b *Builder) AddPrefix(p netip.Prefix, note string) {
	b.addPrefix(p, ActionNone, note)
}

func (b *Builder) addPrefix(p netip.Prefix, act Action, note string) {
	p, ok := canonPrefix(p)
	if !ok {
		return
	}
	pp := pendingPrefix{
		first: addrKey(p.Addr()),
		seq:   uint32(len(b.ip)),
		note:  -1,
		bits:  uint8(p.Bits()),
		v6:    p.Addr().Is6(),
		flags: makeFlags(0, modeTree, act),
	}
	if note != "" {
		pp.note = int32(len(b.ipNotes))
		b.ipNotes = append(b.ipNotes, strings.Clone(note))
	}
	b.ip = append(b.ip, pp)
}

// Build compiles the rules and fills src.Rules: rules as written, exact
// duplicates (same name and syntax, or same prefix) removed; in an
// allowlist all of them count as Allow. The Builder must not be used
// afterwards.
func (b *Builder) Build() *Rules {
	r := &Rules{src: b.src, allow: b.src != nil && b.src.Allow}
	dom, sc := buildDomains(&b.dom)
	ips, pc := buildPrefixes(b.ip, b.ipNotes)
	r.dom, r.ip = dom, ips
	b.dom, b.ip, b.ipNotes = pendingDomains{}, nil, nil

	c := RuleCounts{
		Domain:   sc[SyntaxPlain] + sc[SyntaxAdblock] + sc[SyntaxAdblockImportant],
		Wildcard: sc[SyntaxWildcard],
		IP:       pc.ip,
		CIDR:     pc.cidr,
	}
	if r.allow {
		c = RuleCounts{Allow: c.Total()}
	}
	if b.src != nil {
		b.src.Rules = c
	}
	return r
}

// Policy is an immutable snapshot of every source's rules.
//
// It keeps each source's compiled rules as they are (nothing is merged, so
// NewPolicy costs a sort of the sources, not a re-index of their rules): a
// name check hashes the name once, label by label from the right, and
// probes each source's table with each parent suffix's hash, skipping
// sources that hold no rule with that many labels and, from two labels
// on, sources that hold no rule below the suffix (no marker): most names
// are done after the second label. The cost grows with the number of
// lists; a list is one probe per label walked, about 15 ns when cached.
type Policy struct {
	settings Settings
	rules    []*Rules
	doms     []domSource
	ips      []ipSource
	labels   uint64 // union of the sources' label bits
	maxDepth int    // no rule has more labels than this
}

type domSource struct {
	set    *domainSet
	rules  *Rules
	action Action
	allow  bool
}

type ipSource struct {
	set    *prefixSet
	rules  *Rules
	action Action
	allow  bool
}

// NewPolicy builds a snapshot from compiled rule sets (nil ones are
// skipped). It does not copy or re-index them: it only orders them by
// source name, which breaks ties between equally specific rules.
func NewPolicy(s Settings, rules []*Rules) *Policy {
	p := &Policy{settings: s}
	for _, r := range rules {
		if r != nil {
			p.rules = append(p.rules, r)
		}
	}
	slices.SortStableFunc(p.rules, func(a, b *Rules) int { return strings.Compare(a.name(), b.name()) })
	for _, r := range p.rules {
		act := ActionNone
		if r.src != nil {
			act = r.src.Action
		}
		if act == ActionNone {
			act = s.Action
		}
		if act == ActionNone {
			act = ActionSinkhole
		}
		if r.dom != nil && r.dom.n > 0 {
			p.doms = append(p.doms, domSource{set: r.dom, rules: r, action: act, allow: r.allow})
			p.labels |= r.dom.labels
		}
		if r.ip != nil && r.ip.n > 0 {
			p.ips = append(p.ips, ipSource{set: r.ip, rules: r, action: act, allow: r.allow})
		}
	}
	p.maxDepth = max(bits.Len64(p.labels)-1, 0)
	if p.maxDepth == 63 { // bit 63 stands for 63 labels or more
		p.maxDepth = maxLabels
	}
	return p
}

// maxLabels bounds any name's labels (127 in DNS; more for garbage input).
const maxLabels = 1 << 30

func (r *Rules) name() string {
	if r.src == nil {
		return ""
	}
	return r.src.Name
}

// Settings are the parameters of synthesized answers.
func (p *Policy) Settings() Settings { return p.settings }

// Rules are the rule sets of this snapshot, in source-name order.
func (p *Policy) Rules() []*Rules { return p.rules }

// nameMatch is the most specific rule of one kind that matched a name.
type nameMatch struct {
	src    int32 // index in Policy.doms, -1: none
	off    uint32
	labels int32
	action Action
}

func (m *nameMatch) ok() bool { return m.src >= 0 }

// set records a match if it is more specific than the one held: sources
// are probed in name order and suffixes from short to long, so a later
// suffix wins and, at the same suffix, the first source does.
func (m *nameMatch) set(src int, off uint32, labels int, act Action) {
	if m.src < 0 || int32(labels) > m.labels {
		*m = nameMatch{src: int32(src), off: off, labels: int32(labels), action: act}
	}
}

// matchName finds, for name and each of its parent suffixes, the most
// specific allow rule, blocking rule and log rule. A final dot is
// ignored.
func (p *Policy) matchName(name []byte) (allow, block, log nameMatch) {
	allow.src, block.src, log.src = -1, -1, -1
	if n := len(name); n > 0 && name[n-1] == '.' {
		name = name[:n-1]
	}
	if len(name) == 0 || len(p.doms) == 0 {
		return
	}
	h := uint64(hashSeed)
	e := len(name)
	// alive has a bit for each of the first 64 sources that may still
	// match a longer suffix; later ones are always probed.
	alive := ^uint64(0)
	for labels := 1; labels <= p.maxDepth; labels++ {
		var s int
		h, s = hashLabelAt(h, name, e)
		if bit := labelBit(labels); p.labels&bit != 0 {
			suffix, whole := name[s:], s == 0
			for i := range p.doms {
				d := &p.doms[i]
				live := uint64(1) << (i & 63)
				if d.set.labels&bit == 0 || alive&live == 0 && i < 64 {
					continue
				}
				off, ok, more := d.set.find(h, suffix, whole)
				if !more && labels >= 2 && i < 64 {
					alive &^= live // nothing below this suffix in this list
				}
				if !ok {
					continue
				}
				switch act := d.set.action(off, d.action); {
				case d.allow:
					allow.set(i, off, labels, ActionNone)
				case act == ActionLog:
					log.set(i, off, labels, act)
				default:
					block.set(i, off, labels, act)
				}
			}
			if alive == 0 && len(p.doms) <= 64 {
				break
			}
		}
		if s == 0 {
			break
		}
		e = s - 1
	}
	return
}

func (p *Policy) nameVerdict(m *nameMatch, t Trigger, name []byte, allowed bool) Verdict {
	r := p.doms[m.src].rules
	return Verdict{Trigger: t, Action: m.action, Allowed: allowed, Source: r.src, Name: name, rules: r, idx: int32(m.off)}
}

// checkName decides on one name: allow beats block, and the most specific
// blocking rule beats any log rule.
func (p *Policy) checkName(name []byte, t Trigger) Verdict {
	allow, block, log := p.matchName(name)
	switch {
	case allow.ok():
		return p.nameVerdict(&allow, t, name, true)
	case block.ok():
		return p.nameVerdict(&block, t, name, false)
	case log.ok():
		return p.nameVerdict(&log, t, name, false)
	}
	return Verdict{}
}

// CheckQuery decides on a query before upstream is asked. qname is
// lower-case presentation format without the final dot; it is split into
// labels at every '.'. The verdict's Name aliases qname.
//
// An allowlisted qname (or parent) gives an Allowed verdict: the whole
// answer is exempt. Otherwise the most specific blocking rule decides (the
// longest matched name; at equal length the source whose name sorts
// first); with none, the most specific log rule is returned. client is for
// RPZ client-ip triggers (later).
func (p *Policy) CheckQuery(client netip.Addr, qname []byte) Verdict {
	return p.checkName(qname, TriggerQName)
}

// addrMatch is the most specific prefix of one kind that matched an
// address.
type addrMatch struct {
	src    int32 // index in Policy.ips, -1: none
	bits   int32
	action Action
}

func (m *addrMatch) ok() bool { return m.src >= 0 }

func (m *addrMatch) set(src, bits int, act Action) {
	if m.src < 0 || int32(bits) > m.bits {
		*m = addrMatch{src: int32(src), bits: int32(bits), action: act}
	}
}

// matchAddr finds the longest allow, blocking and log prefixes holding a
// (unmapped, without zone).
func (p *Policy) matchAddr(a netip.Addr) (allow, block, log addrMatch) {
	allow.src, block.src, log.src = -1, -1, -1
	for i := range p.ips {
		s := &p.ips[i]
		bits, flags, ok := s.set.lookup(a)
		if !ok {
			continue
		}
		switch act := prefixAction(flags, s.action); {
		case s.allow:
			allow.set(i, bits, ActionNone)
		case act == ActionLog:
			log.set(i, bits, act)
		default:
			block.set(i, bits, act)
		}
	}
	return
}

func (p *Policy) addrVerdict(m *addrMatch, t Trigger, a netip.Addr, allowed bool) Verdict {
	r := p.ips[m.src].rules
	return Verdict{Trigger: t, Action: m.action, Allowed: allowed, Source: r.src, Addr: a, rules: r, idx: m.bits}
}

// CheckAnswer decides on an upstream answer (the resolver does not call it
// for an allowlisted qname). Every CNAME/DNAME target and every address is
// checked; an allowlisted target or address exempts only itself.
//
// When several block, the most specific wins, names before addresses:
// among targets the rule with the most labels, among addresses the longest
// prefix; at equal specificity the source whose name sorts first, then
// answer order. A name is taken as more specific than any address, as it
// names one service where an address may host many. With no blocking
// match the most specific log match is returned the same way, and else the
// zero Verdict. Allowed verdicts are never returned.
func (p *Policy) CheckAnswer(client netip.Addr, a *Answer) Verdict {
	var (
		block, log       nameMatch
		blockAt, logAt   int
		ablock, alog     addrMatch
		ablockAt, alogAt int
	)
	block.src, log.src = -1, -1
	if len(p.doms) > 0 {
		for i, t := range a.Targets {
			al, bl, lg := p.matchName(t)
			if al.ok() {
				continue
			}
			if bl.ok() && better(bl.labels, bl.src, block.labels, block.src) {
				block, blockAt = bl, i
			}
			if lg.ok() && better(lg.labels, lg.src, log.labels, log.src) {
				log, logAt = lg, i
			}
		}
		if block.ok() {
			return p.nameVerdict(&block, TriggerCNAME, a.Targets[blockAt], false)
		}
	}
	ablock.src, alog.src = -1, -1
	if len(p.ips) > 0 {
		for i, ad := range a.Addrs {
			al, bl, lg := p.matchAddr(ad.Unmap().WithZone(""))
			if al.ok() {
				continue
			}
			if bl.ok() && better(bl.bits, bl.src, ablock.bits, ablock.src) {
				ablock, ablockAt = bl, i
			}
			if lg.ok() && better(lg.bits, lg.src, alog.bits, alog.src) {
				alog, alogAt = lg, i
			}
		}
		if ablock.ok() {
			return p.addrVerdict(&ablock, TriggerIP, a.Addrs[ablockAt].Unmap(), false)
		}
	}
	if log.ok() {
		return p.nameVerdict(&log, TriggerCNAME, a.Targets[logAt], false)
	}
	if alog.ok() {
		return p.addrVerdict(&alog, TriggerIP, a.Addrs[alogAt].Unmap(), false)
	}
	return Verdict{}
}

// better reports whether a match of length n from source src beats the one
// held (length hn from hsrc, hsrc < 0: none): longer wins, then the source
// that sorts first; a tie keeps the one held (earlier in the answer).
func better(n, src, hn, hsrc int32) bool {
	return hsrc < 0 || n > hn || n == hn && src < hsrc
}

// Explain checks a name or an address the way a query (for a name) or an
// answer (for an address) would be, for `sinkd check -q`. Names may be in
// any case and end in a dot.
func (p *Policy) Explain(x string) Verdict {
	x = strings.TrimSpace(x)
	if a, err := netip.ParseAddr(x); err == nil {
		a = a.Unmap().WithZone("")
		al, bl, lg := p.matchAddr(a)
		switch {
		case al.ok():
			return p.addrVerdict(&al, TriggerIP, a, true)
		case bl.ok():
			return p.addrVerdict(&bl, TriggerIP, a, false)
		case lg.ok():
			return p.addrVerdict(&lg, TriggerIP, a, false)
		}
		return Verdict{}
	}
	name := strings.TrimSuffix(strings.ToLower(x), ".")
	return p.checkName([]byte(name), TriggerQName)
}
