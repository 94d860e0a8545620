package upstream

import (
	"errors"
	"testing"

	"github.com/miekg/dns"
)

// A reply cut short must not pass for the records it still holds: miekg
// unpacks a message that ends where a record should start as if the
// header's counts were right.
func TestUnpackReplyRejectsCutMessages(t *testing.T) {
	t.Parallel()
	q := question("cut.example.", 1)
	query, err := q.Pack()
	if err != nil {
		t.Fatal(err)
	}
	full := reply(q, "192.0.2.1")
	full.SetEdns0(1232, false)
	b, err := full.Pack()
	if err != nil {
		t.Fatal(err)
	}
	qEnd := questionEnd(b)
	tc := reply(q)
	tc.Truncated = true
	tcb, err := tc.Pack()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		reply   []byte
		wantErr error // nil: accepted
	}{
		{name: "whole", reply: b},
		{name: "cut after the question", reply: b[:qEnd], wantErr: errCounts},
		{name: "cut before the OPT", reply: b[:len(b)-11], wantErr: errCounts},
		{name: "TC with no records", reply: tcb},
		{name: "TC, counts say one answer", reply: append(tcb[:6:6], append([]byte{0, 1}, tcb[8:]...)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := unpackReply(query, tt.reply)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				if len(m.Question) != 1 || m.Question[0].Name != "cut.example." || m.Question[0].Qtype != dns.TypeA {
					t.Errorf("question %v", m.Question)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
