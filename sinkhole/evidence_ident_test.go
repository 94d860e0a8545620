package sinkhole

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestEvidenceLeaseFiles(t *testing.T) {
	t.Parallel()
	now := evT0() // 2025-03-14T15:09:26Z
	tests := []struct {
		file       string
		wantFormat string
		want       map[string]string // address -> "host mac"; absent: no host
	}{
		{file: "dnsmasq.leases", wantFormat: "dnsmasq", want: map[string]string{
			"192.168.1.10": "laptop aa:bb:cc:00:00:01",
			"192.168.1.11": "printer.lan aa:bb:cc:00:00:02",
			"2001:db8::10": "laptop6 ",
		}},
		{file: "dhcpd.leases", wantFormat: "isc", want: map[string]string{
			"192.168.1.20": `desk"top aa:bb:cc:00:00:20`,
			"192.168.1.21": "nas aa:bb:cc:00:00:21",
			"192.168.1.23": "phone aa:bb:cc:00:00:23",
		}},
		{file: "kea-leases4.csv", wantFormat: "kea", want: map[string]string{
			"192.168.1.30": "tv-renewed aa:bb:cc:00:00:30",
			"192.168.1.31": "odd,name aa:bb:cc:00:00:31",
		}},
		{file: "kea-leases6.csv", wantFormat: "kea", want: map[string]string{
			"2001:db8::30": "tv6 aa:bb:cc:00:00:30",
		}},
	}
	probe := []string{"192.168.1.10", "192.168.1.11", "192.168.1.12", "192.168.1.13", "2001:db8::10",
		"192.168.1.20", "192.168.1.21", "192.168.1.22", "192.168.1.23", "192.168.1.30", "192.168.1.31",
		"192.168.1.32", "2001:db8::30", "10.0.0.1"}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join("testdata", "evidence", tt.file)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, f := evParseLeases(b); f != tt.wantFormat {
				t.Errorf("format %q, want %q", f, tt.wantFormat)
			}
			l := &evLeases{path: path, now: func() time.Time { return now }}
			for _, a := range probe {
				got := ""
				if e, ok := l.lookup(netip.MustParseAddr(a)); ok {
					got = e.host + " " + e.mac
				}
				if got != tt.want[a] {
					t.Errorf("%s: %q, want %q", a, got, tt.want[a])
				}
			}
		})
	}
}

func TestEvidenceLeasesReloadOnChange(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	p := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(p, []byte("0 aa:bb:cc:00:00:01 192.168.1.10 first *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := newEvIdent(func(netip.Addr) (string, bool) { return "aa:bb:cc:00:00:01", true }, p, clock.Now, nil)
	a := netip.MustParseAddr("192.168.1.10")
	if mac, host := id.lookup(a); mac != "aa:bb:cc:00:00:01" || host != "first" {
		t.Fatalf("lookup = %q %q", mac, host)
	}
	if err := os.WriteFile(p, []byte("0 aa:bb:cc:00:00:01 192.168.1.10 second-name *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, host := id.lookup(a); host != "first" {
		t.Errorf("re-read before a second passed: %q", host)
	}
	clock.Add(evLeaseCheck)
	if _, host := id.lookup(a); host != "second-name" {
		t.Errorf("after the change: %q, want second-name", host)
	}
	// A lease naming another MAC than the neighbour table's is not this
	// client's.
	if err := os.WriteFile(p, []byte("0 aa:bb:cc:00:00:99 192.168.1.10 someone-else *\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Add(evLeaseCheck)
	if _, host := id.lookup(a); host != "" {
		t.Errorf("lease of another MAC gave host %q", host)
	}
	if mac, host := id.lookup(netip.MustParseAddr("127.0.0.1")); mac != "" || host != "" {
		t.Errorf("loopback: %q %q", mac, host)
	}
}

func TestEvidenceARP(t *testing.T) {
	t.Parallel()
	clock := newEvClock(evT0())
	c := &evNeighCache{arpPath: filepath.Join("testdata", "evidence", "arp"), now: clock.Now}
	tests := []struct {
		addr string
		want string
	}{
		{"192.168.1.10", "aa:bb:cc:00:00:01"},
		{"192.168.1.11", ""}, // incomplete
		{"192.168.1.12", "aa:bb:cc:00:00:03"},
		{"192.168.1.13", ""}, // zero MAC
		{"192.168.1.99", ""}, // not on the link (routed)
		{"2001:db8::1", ""},  // no IPv6 table given
	}
	for _, tt := range tests {
		if got, _ := c.lookup(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.addr, got, tt.want)
		}
	}
}

// evNeighMsg builds one RTM_NEWNEIGH message as the kernel sends it.
func evNeighMsg(typ uint16, state uint16, dst netip.Addr, ll []byte) []byte {
	ne := binary.NativeEndian
	attr := func(t uint16, v []byte) []byte {
		b := make([]byte, 4, evAlign(4+len(v)))
		ne.PutUint16(b[0:2], uint16(4+len(v)))
		ne.PutUint16(b[2:4], t)
		b = append(b, v...)
		return append(b, make([]byte, evAlign(len(b))-len(b))...)
	}
	nd := make([]byte, evNdmsgLen)
	nd[0] = 10 // AF_INET6
	ne.PutUint16(nd[8:10], state)
	body := append(nd, attr(evNDADst, dst.AsSlice())...)
	if ll != nil {
		body = append(body, attr(evNDALLAddr, ll)...)
	}
	h := make([]byte, evNlmsgHdrLen)
	ne.PutUint32(h[0:4], uint32(evNlmsgHdrLen+len(body)))
	ne.PutUint16(h[4:6], typ)
	return append(h, body...)
}

func TestEvidenceNetlinkNeighbours(t *testing.T) {
	t.Parallel()
	mac := []byte{0xaa, 0xbb, 0xcc, 0, 0, 0x60}
	var dump []byte
	dump = append(dump, evNeighMsg(evRTMNewNeigh, 0x02, netip.MustParseAddr("2001:db8::60"), mac)...)
	dump = append(dump, evNeighMsg(evRTMNewNeigh, 0x04, netip.MustParseAddr("fe80::61"), []byte{0xaa, 0xbb, 0xcc, 0, 0, 0x61})...)
	dump = append(dump, evNeighMsg(evRTMNewNeigh, 0x20, netip.MustParseAddr("2001:db8::62"), mac)...) // failed
	dump = append(dump, evNeighMsg(evRTMNewNeigh, 0x01, netip.MustParseAddr("2001:db8::63"), nil)...) // incomplete
	dump = append(dump, evNeighMsg(evNlmsgDone, 0, netip.MustParseAddr("::"), nil)...)
	dump = append(dump, evNeighMsg(evRTMNewNeigh, 0x02, netip.MustParseAddr("2001:db8::64"), mac)...) // after DONE
	got := evParseNeigh(dump)
	want := map[netip.Addr]string{
		netip.MustParseAddr("2001:db8::60"): "aa:bb:cc:00:00:60",
		netip.MustParseAddr("fe80::61"):     "aa:bb:cc:00:00:61",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("evParseNeigh = %v, want %v", got, want)
	}
	clock := newEvClock(evT0())
	calls := 0
	c := &evNeighCache{arpPath: "/nonexistent", dump6: func() ([]byte, error) { calls++; return dump, nil }, now: clock.Now}
	for range 3 {
		if m, _ := c.lookup(netip.MustParseAddr("2001:db8::60")); m != "aa:bb:cc:00:00:60" {
			t.Errorf("lookup = %q", m)
		}
	}
	clock.Add(evNeighTTL)
	c.lookup(netip.MustParseAddr("2001:db8::99"))
	if calls != 2 {
		t.Errorf("%d netlink dumps, want 2 (cached for %v)", calls, evNeighTTL)
	}
}

// TestEvidenceKernelNeighbours reads this machine's real tables: no
// assertion on content, only that it works without privileges.
func TestEvidenceKernelNeighbours(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/net/arp"); err != nil {
		t.Skip("no /proc/net/arp")
	}
	b, err := evDumpNeigh6()
	if err != nil {
		t.Skipf("netlink: %v", err)
	}
	_ = evParseNeigh(b)
}

func FuzzEvidenceLeases(f *testing.F) {
	for _, name := range []string{"dnsmasq.leases", "dhcpd.leases", "kea-leases4.csv", "kea-leases6.csv"} {
		b, err := os.ReadFile(filepath.Join("testdata", "evidence", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, parse := range []func([]byte) map[netip.Addr]evLease{evParseDnsmasq, evParseISC, evParseKea} {
			for a, l := range parse(b) {
				if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
					t.Errorf("bad address %v", a)
				}
				if len(l.host) > evMaxHostLen || l.mac != "" && evMAC(l.mac) != l.mac {
					t.Errorf("bad lease %+v", l)
				}
			}
		}
		evParseLeases(b)
	})
}

func FuzzEvidenceNeighbours(f *testing.F) {
	f.Add(evNeighMsg(evRTMNewNeigh, 0x02, netip.MustParseAddr("2001:db8::60"), []byte{1, 2, 3, 4, 5, 6}))
	b, _ := os.ReadFile(filepath.Join("testdata", "evidence", "arp"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		for a, mac := range evParseNeigh(b) {
			if !a.IsValid() || evMAC(mac) != mac {
				t.Errorf("bad entry %v %q", a, mac)
			}
		}
		for a, mac := range evParseARP(b) {
			if !a.Is4() || evMAC(mac) != mac {
				t.Errorf("bad entry %v %q", a, mac)
			}
		}
	})
}
