package upstream

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"time"

	"github.com/miekg/dns"
)

// dohMediaType is the RFC 8484 content type of DNS messages.
const dohMediaType = "application/dns-message"

// dohTransport POSTs queries (ID 0 on the wire, RFC 8484 s4.1) to one URL.
type dohTransport struct {
	url    string
	client *http.Client
}

// newHTTPClient returns the Pool's own DoH client: HTTP/2 when the server
// offers it (ALPN), a few idle connections kept per host.
func newHTTPClient(d *net.Dialer, tlsCfg *tls.Config) *http.Client {
	tr := &http.Transport{
		DialContext:           d.DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 0, // the request context bounds the wait
	}
	return &http.Client{Transport: tr}
}

func (t *dohTransport) exchange(ctx context.Context, query []byte) (*dns.Msg, error) {
	q := append([]byte(nil), query...)
	setID(q, 0)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(q))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", dohMediaType)
	req.Header.Set("Accept", dohMediaType)
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("http status %s", resp.Status)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != dohMediaType {
		return nil, fmt.Errorf("content type %q, want %s", resp.Header.Get("Content-Type"), dohMediaType)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMsgLen+1))
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if len(body) > maxMsgLen {
		return nil, fmt.Errorf("reply longer than %d bytes", maxMsgLen)
	}
	return unpackReply(q, body)
}

// close does nothing: the Pool closes idle connections of its own client.
func (t *dohTransport) close() {}
