package listener

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

// testExt is one extension of a built ClientHello.
type testExt struct {
	typ  uint16
	data []byte
}

func be16(v int) []byte { return []byte{byte(v >> 8), byte(v)} }

// buildHello builds a TLS record holding a ClientHello.
func buildHello(legacy uint16, ciphers []uint16, exts []testExt) []byte {
	var body []byte
	body = append(body, be16(int(legacy))...)
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, be16(2*len(ciphers))...)
	for _, c := range ciphers {
		body = append(body, be16(int(c))...)
	}
	body = append(body, 1, 0) // compression: null
	var eb []byte
	for _, e := range exts {
		eb = append(eb, be16(int(e.typ))...)
		eb = append(eb, be16(len(e.data))...)
		eb = append(eb, e.data...)
	}
	body = append(body, be16(len(eb))...)
	body = append(body, eb...)
	hs := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{0x16, 3, 1, byte(len(hs) >> 8), byte(len(hs))}, hs...)
}

func sniExt(name string) testExt {
	e := append([]byte{0}, be16(len(name))...)
	e = append(e, name...)
	return testExt{0, append(be16(len(e)), e...)}
}

func alpnExt(protos ...string) testExt {
	var l []byte
	for _, p := range protos {
		l = append(l, byte(len(p)))
		l = append(l, p...)
	}
	return testExt{16, append(be16(len(l)), l...)}
}

func u16Ext(typ uint16, lenBytes int, vs ...uint16) testExt {
	var l []byte
	for _, v := range vs {
		l = append(l, be16(int(v))...)
	}
	if lenBytes == 1 {
		return testExt{typ, append([]byte{byte(len(l))}, l...)}
	}
	return testExt{typ, append(be16(len(l)), l...)}
}

func sha12(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}

// The expected fingerprints are written out from the JA4 definition by
// hand: counts without GREASE, the cipher list sorted, the extension list
// sorted without SNI (0000) and ALPN (0010), then the signature algorithms
// in their order.
func TestJA4(t *testing.T) {
	t.Parallel()
	grease := uint16(0x3a3a)
	tests := []struct {
		name        string
		hello       []byte
		wantJA4     string
		wantSNI     string
		wantALPN    []string
		wantVersion string
	}{
		{
			name: "tls 1.3 with sni, alpn h2 and grease",
			hello: buildHello(0x0303, []uint16{grease, 0x1302, 0x1301, 0xc02f},
				[]testExt{{grease, nil}, sniExt("evil.example"), alpnExt("h2", "http/1.1"),
					u16Ext(43, 1, grease, 0x0304, 0x0303), u16Ext(13, 2, 0x0403, 0x0804, 0x0401), u16Ext(10, 2, 0x001d)}),
			wantJA4: "t13d0305h2_" + sha12("1301,1302,c02f") + "_" + sha12("000a,000d,002b_0403,0804,0401"),
			wantSNI: "evil.example", wantALPN: []string{"h2", "http/1.1"}, wantVersion: "1.3",
		},
		{
			name:        "tls 1.2, no sni, no alpn, no signature algorithms",
			hello:       buildHello(0x0303, []uint16{0x009c, 0x002f}, []testExt{u16Ext(10, 2, 0x0017), {0xff01, []byte{0}}}),
			wantJA4:     "t12i020200_" + sha12("002f,009c") + "_" + sha12("000a,ff01"),
			wantVersion: "1.2",
		},
		{
			name:        "no extensions",
			hello:       buildHello(0x0301, []uint16{0x002f}, nil),
			wantJA4:     "t10i010000_" + sha12("002f") + "_000000000000",
			wantVersion: "1.0",
		},
		{
			name:     "alpn not alphanumeric: hex digits",
			hello:    buildHello(0x0303, []uint16{0x1301}, []testExt{alpnExt("\x01x\xab")}),
			wantJA4:  "t12i01010b_" + sha12("1301") + "_000000000000", // nothing left to hash: zeros
			wantALPN: []string{"\x01x\xab"}, wantVersion: "1.2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ch, err := parseClientHello(tc.hello)
			if err != nil {
				t.Fatal(err)
			}
			if got := ch.ja4(); got != tc.wantJA4 {
				t.Errorf("ja4 = %s, want %s", got, tc.wantJA4)
			}
			if ch.sni != tc.wantSNI || versionName(ch.version()) != tc.wantVersion || len(ch.alpn) != len(tc.wantALPN) {
				t.Errorf("sni %q version %q alpn %q, want %q %q %q", ch.sni, versionName(ch.version()), ch.alpn, tc.wantSNI, tc.wantVersion, tc.wantALPN)
			}
			for i := 1; i < len(tc.hello); i++ {
				if _, err := parseClientHello(tc.hello[:i]); !errors.Is(err, errNeedMore) {
					t.Fatalf("first %d bytes: err %v, want errNeedMore", i, err)
				}
			}
		})
	}
}

func TestParseClientHelloRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"GET / HTTP/1.1\r\n", "\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "\x17\x03\x03\x00\x01x"} {
		if _, err := parseClientHello([]byte(in)); !errors.Is(err, errNotHello) {
			t.Errorf("%q: err %v, want errNotHello", in, err)
		}
	}
}

func TestParseHTTP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                 string
		in                   string
		final                bool
		wantErr              error
		wantMethod, wantHost string
		wantPath, wantUA     string
	}{
		{name: "full head", in: "GET /gate.php?id=1 HTTP/1.1\r\nhost: evil.example\r\nUser-Agent: bot/1\r\n\r\nbody",
			wantMethod: "GET", wantHost: "evil.example", wantPath: "/gate.php?id=1", wantUA: "bot/1"},
		{name: "bare newlines", in: "POST / HTTP/1.0\nHost: a.example:8080\n\n", wantMethod: "POST", wantHost: "a.example:8080", wantPath: "/"},
		{name: "head not finished", in: "GET / HTTP/1.1\r\nHost: a", wantErr: errNeedMore},
		{name: "method only so far", in: "GE", wantErr: errNeedMore},
		{name: "cut short at the cap", in: "GET /very/long", final: true, wantMethod: "GET", wantPath: "/very/long"},
		{name: "not http", in: "\x00\x01binary", wantErr: errNotHTTP},
		{name: "smtp-like", in: "EHLO mail.example\r\n", wantErr: errNotHTTP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, err := parseHTTP([]byte(tc.in), tc.final)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if h.Method != tc.wantMethod || h.Host != tc.wantHost || h.Path != tc.wantPath || h.UserAgent != tc.wantUA {
				t.Errorf("got %+v", *h)
			}
		})
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(buildHello(0x0303, []uint16{0x1301}, []testExt{sniExt("a.example"), alpnExt("h2"), u16Ext(43, 1, 0x0304)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := parseClientHello(b)
		if err == nil {
			_ = ch.ja4()
		}
	})
}

func FuzzParseHTTP(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, b []byte, final bool) {
		h, err := parseHTTP(b, final)
		if err == nil && (len(h.Path) > maxPath || len(h.Host) > maxHeader) {
			t.Fatalf("caps exceeded: %+v", h)
		}
	})
}
