package upstream

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// FuzzCheckReply feeds untrusted replies to the anti-spoofing check: it
// must not panic, and what it accepts must carry the query's ID and
// question.
func FuzzCheckReply(f *testing.F) {
	q := new(dns.Msg)
	q.SetQuestion("WwW.Example.ORG.", dns.TypeA)
	q.Id = 0x1234
	query, err := q.Pack()
	if err != nil {
		f.Fatal(err)
	}
	good := reply(q, "192.0.2.1")
	good.Question[0].Name = "www.example.org."
	goodWire, _ := good.Pack()
	f.Add(goodWire)
	f.Add(query)
	f.Add([]byte{0x12, 0x34})
	f.Add([]byte{0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkReply(query, b) != nil {
			return
		}
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return // accepted by the wire check, rejected by Unpack: unpackReply drops it
		}
		if m.Id != q.Id || !m.Response || len(m.Question) != 1 ||
			!strings.EqualFold(m.Question[0].Name, q.Question[0].Name) ||
			m.Question[0].Qtype != q.Question[0].Qtype || m.Question[0].Qclass != q.Question[0].Qclass {
			t.Fatalf("accepted a reply that does not answer the query: %v", m)
		}
	})
}

// FuzzResolvConf parses untrusted resolv.conf content: no panic, and
// every address found makes a valid upstream entry.
func FuzzResolvConf(f *testing.F) {
	f.Add([]byte("nameserver 192.0.2.1\nnameserver 2001:db8::1 # x\n"))
	f.Add([]byte("search a b\noptions ndots:5\n;nameserver 1.1.1.1\nnameserver fe80::1%eth0"))
	f.Add([]byte("nameserver\r\nnameserver\t::ffff:10.0.0.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		servers := resolvConfServers(b, []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")})
		if len(servers) > 0 {
			cfg := Config{Servers: servers}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("servers %q do not validate: %v", servers, err)
			}
		}
	})
}
