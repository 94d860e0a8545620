package main

import (
	"testing"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

func TestBuildListener(t *testing.T) {
	t.Parallel()
	ports := []uint16{8080}
	tests := []struct {
		name       string
		in         listenerFile
		wantOff    bool
		wantErr    bool
		wantPorts  int
		wantWindow time.Duration
	}{
		{name: "off without addresses", in: listenerFile{CorrelationWindow: duration(time.Minute)}, wantOff: true, wantWindow: time.Minute},
		{name: "defaults", in: listenerFile{Addresses: []string{"192.0.2.1"}}, wantPorts: 4},
		{name: "ports set", in: listenerFile{Addresses: []string{"192.0.2.1"}, TCPPorts: &ports}, wantPorts: 1},
		{name: "wildcard rejected", in: listenerFile{Addresses: []string{"0.0.0.0"}}, wantErr: true},
		{name: "ipv6 wildcard rejected", in: listenerFile{Addresses: []string{"::"}}, wantErr: true},
		{name: "bad http_reply", in: listenerFile{Addresses: []string{"192.0.2.1"}, HTTPReply: "html"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ev sinkhole.LogConfig
			c, err := buildListener(tc.in, "i", &ev)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if (c == nil) != tc.wantOff {
				t.Fatalf("config %+v, want off %v", c, tc.wantOff)
			}
			if c != nil && len(c.TCPPorts) != tc.wantPorts {
				t.Errorf("tcp ports %v, want %d", c.TCPPorts, tc.wantPorts)
			}
			if ev.CorrelationWindow != tc.wantWindow {
				t.Errorf("correlation window %v, want %v", ev.CorrelationWindow, tc.wantWindow)
			}
		})
	}
}
