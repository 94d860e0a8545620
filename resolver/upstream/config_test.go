package upstream

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseServer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    server
		wantErr string // substring; "" for success
	}{
		{in: "1.2.3.4", want: server{proto: protoUDP, addr: "1.2.3.4:53"}},
		{in: "1.2.3.4:5353", want: server{proto: protoUDP, addr: "1.2.3.4:5353"}},
		{in: "2001:db8::1", want: server{proto: protoUDP, addr: "[2001:db8::1]:53"}},
		{in: "[2001:db8::1]:53", want: server{proto: protoUDP, addr: "[2001:db8::1]:53"}},
		{in: "fe80::1%eth0", want: server{proto: protoUDP, addr: "[fe80::1%eth0]:53"}},
		{in: "udp://192.0.2.1:5300", want: server{proto: protoUDP, addr: "192.0.2.1:5300"}},
		{in: "udp://[2001:db8::1]", want: server{proto: protoUDP, addr: "[2001:db8::1]:53"}},
		{in: "udp://dns.example:5300", wantErr: "not an IP"},
		{in: "tcp://1.2.3.4", want: server{proto: protoTCP, addr: "1.2.3.4:53"}},
		{in: "tcp://[2001:db8::1]", want: server{proto: protoTCP, addr: "[2001:db8::1]:53"}},
		{in: "tcp://2001:db8::1", want: server{proto: protoTCP, addr: "[2001:db8::1]:53"}},
		{in: "TCP://dns.example:53", want: server{proto: protoTCP, addr: "dns.example:53"}},
		{in: "tls://1.1.1.1", want: server{proto: protoTLS, addr: "1.1.1.1:853", serverName: "1.1.1.1"}},
		{in: "tls://1.1.1.1#cloudflare-dns.com", want: server{proto: protoTLS, addr: "1.1.1.1:853", serverName: "cloudflare-dns.com"}},
		{in: "tls://dns.quad9.net:8853", want: server{proto: protoTLS, addr: "dns.quad9.net:8853", serverName: "dns.quad9.net"}},
		{in: "tls://[2606:4700::1111]:853#one.one.one.one", want: server{proto: protoTLS, addr: "[2606:4700::1111]:853", serverName: "one.one.one.one"}},
		{in: "https://dns.google/dns-query", want: server{proto: protoHTTPS, url: "https://dns.google/dns-query"}},
		{in: "https://1.1.1.1", want: server{proto: protoHTTPS, url: "https://1.1.1.1/dns-query"}},
		{in: "https://[2606:4700::1111]:8443/q?x=1", want: server{proto: protoHTTPS, url: "https://[2606:4700::1111]:8443/q?x=1"}},

		{in: "", wantErr: "empty"},
		{in: " 1.2.3.4", wantErr: "white space"},
		{in: "dns.example", wantErr: "not an IP"},
		{in: "1.2.3.4:0", wantErr: "port 0"},
		{in: "1.2.3.4:99999", wantErr: "not an IP"},
		{in: "quic://1.2.3.4", wantErr: "unknown scheme"},
		{in: "tcp://", wantErr: "missing host"},
		{in: "tcp://1.2.3.4:x", wantErr: "bad port"},
		{in: "tcp://1.2.3.4:", wantErr: "bad port"},
		{in: "tcp://1.2.3.4/path", wantErr: "unexpected path"},
		{in: "tcp://bad_host!:53", wantErr: "bad host name"},
		{in: "tls://1.2.3.4#", wantErr: "empty server name"},
		{in: "https://", wantErr: "missing host"},
		{in: "https://user:pw@dns.example/", wantErr: "user info"},
		{in: "https://dns.example:70000/", wantErr: "port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := parseServer(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "upstream: server") {
					t.Fatalf("parseServer(%q) err = %v, want one naming the entry and containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.want.name = tt.in
			if got != tt.want {
				t.Errorf("parseServer(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     Config
		want    Config // after defaults
		wantErr string
	}{
		{
			name: "defaults",
			cfg:  Config{Servers: []string{"1.2.3.4"}},
			want: Config{Servers: []string{"1.2.3.4"}, Strategy: StrategyFastest, Timeout: 2 * time.Second},
		},
		{
			name: "parallel kept",
			cfg:  Config{Servers: []string{"1.2.3.4", "tls://1.1.1.1"}, Strategy: "parallel", Timeout: time.Second},
			want: Config{Servers: []string{"1.2.3.4", "tls://1.1.1.1"}, Strategy: StrategyParallel, Timeout: time.Second},
		},
		{name: "no servers", cfg: Config{}, wantErr: "no servers"},
		{name: "bad server named", cfg: Config{Servers: []string{"1.2.3.4", "nonsense"}}, wantErr: `"nonsense"`},
		{name: "duplicate", cfg: Config{Servers: []string{"1.2.3.4", "1.2.3.4"}}, wantErr: "twice"},
		{name: "unknown strategy", cfg: Config{Servers: []string{"1.2.3.4"}, Strategy: "random"}, wantErr: `"random"`},
		{name: "negative timeout", cfg: Config{Servers: []string{"1.2.3.4"}, Timeout: -time.Second}, wantErr: "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := tt.cfg
			err := cfg.Validate()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				if _, err := New(tt.cfg, nil, nil); err == nil {
					t.Error("New accepted the config Validate rejects")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg, tt.want) {
				t.Errorf("after Validate: %+v, want %+v", cfg, tt.want)
			}
		})
	}
}

func TestFromResolvConf(t *testing.T) {
	t.Parallel()
	const conf = `# generated by NetworkManager
search lan example.com
options ndots:2 edns0
nameserver 192.0.2.1
nameserver   192.0.2.2   # trailing comment
;nameserver 192.0.2.99
nameserver 2001:db8::53
nameserver fe80::1%eth0
nameserver ::ffff:192.0.2.3
nameserver 192.0.2.1
nameserver not-an-address
nameserver
nameserver 127.0.0.53
nameserver 192.0.2.10
`
	all := []string{"192.0.2.1:53", "192.0.2.2:53", "[2001:db8::53]:53", "[fe80::1%eth0]:53", "192.0.2.3:53", "127.0.0.53:53", "192.0.2.10:53"}
	without := func(drop ...string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(s string) bool { return slices.Contains(drop, s) })
	}
	ap := netip.MustParseAddrPort
	tests := []struct {
		name string
		self []netip.AddrPort
		want []string
	}{
		{"no listen addresses", nil, all},
		{"default listener on 5353 drops nothing", []netip.AddrPort{ap("127.0.0.1:5353")}, all},
		{"loopback listener on 53 drops loopback nameservers", []netip.AddrPort{ap("127.0.0.1:53")}, without("127.0.0.53:53")},
		{"wildcard listener on 53 drops loopback", []netip.AddrPort{ap("0.0.0.0:53")}, without("127.0.0.53:53")},
		{"listening on a nameserver's address", []netip.AddrPort{ap("192.0.2.10:53")}, without("192.0.2.10:53")},
		{"mapped listen address", []netip.AddrPort{ap("[::ffff:192.0.2.3]:53")}, without("192.0.2.3:53")},
		{"same address other port keeps it", []netip.AddrPort{ap("192.0.2.10:5353")}, all},
		{"a non-loopback listener does not claim loopback", []netip.AddrPort{ap("192.0.2.200:53")}, all},
	}
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := FromResolvConf(path, tt.self)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
			cfg := Config{Servers: got}
			if err := cfg.Validate(); err != nil {
				t.Errorf("FromResolvConf output does not validate: %v", err)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		if _, err := FromResolvConf(filepath.Join(t.TempDir(), "nope"), nil); err == nil {
			t.Error("no error for a missing file")
		}
	})
}
