package feeds

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
)

// TestTAXII: a collection served in two pages; the second poll sends
// added_after and its one revocation and one new indicator update the file.
func TestTAXII(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var queries []string
	poll := 0
	ind := func(id, dom string, revoked bool) string {
		return fmt.Sprintf(`{"type":"indicator","id":"indicator--%s","revoked":%t,"pattern_type":"stix","pattern":"[domain-name:value = '%s']"}`, id, revoked, dom)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		queries = append(queries, r.URL.RawQuery)
		if got := r.Header.Get("Accept"); got != taxiiAccept {
			http.Error(w, "accept "+got, http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", taxiiAccept)
		switch {
		case r.URL.Query().Get("added_after") == "" && r.URL.Query().Get("next") == "":
			w.Header().Set("X-TAXII-Date-Added-Last", "2024-01-01T00:00:00.000Z")
			fmt.Fprintf(w, `{"more":true,"next":"p2","objects":[%s,%s]}`, ind("a", "a.evil.example", false), ind("b", "b.evil.example", false))
		case r.URL.Query().Get("next") == "p2":
			w.Header().Set("X-TAXII-Date-Added-Last", "2024-01-02T00:00:00.000Z")
			fmt.Fprintf(w, `{"more":false,"objects":[%s]}`, ind("c", "c.evil.example", false))
		default:
			poll++
			w.Header().Set("X-TAXII-Date-Added-Last", "2024-01-03T00:00:00.000Z")
			if poll == 1 {
				fmt.Fprintf(w, `{"more":false,"objects":[%s,%s]}`, ind("b", "b.evil.example", true), ind("d", "d.evil.example", false))
			} else {
				fmt.Fprint(w, `{"more":false}`)
			}
		}
	}))
	t.Cleanup(srv.Close)
	u := newUpdater(t, t.TempDir(), nil, Feed{Name: "tx", URL: srv.URL + "/collections/c1/objects/", Format: FormatTAXII})
	if rep := u.Update(t.Context(), "tx", false); rep.Result != ResultOK || rep.Rules != 3 {
		t.Fatalf("first poll: %+v, want 3 rules from two pages", rep)
	}
	if rep := u.Update(t.Context(), "tx", false); rep.Result != ResultOK || rep.Rules != 3 {
		t.Fatalf("second poll: %+v, want 3 rules (b revoked, d new)", rep)
	}
	b, _ := os.ReadFile(u.Path("tx"))
	for _, want := range []string{"a.evil.example # indicator--a", "c.evil.example # indicator--c", "d.evil.example # indicator--d"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("missing %q", want)
		}
	}
	if strings.Contains(string(b), "b.evil.example") {
		t.Error("revoked indicator b is still a rule")
	}
	if rep := u.Update(t.Context(), "tx", false); rep.Result != ResultNotModified {
		t.Fatalf("third poll: %+v, want not_modified", rep)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"", "next=p2", "added_after=2024-01-02T00%3A00%3A00.000Z", "added_after=2024-01-03T00%3A00%3A00.000Z"}
	if fmt.Sprint(queries) != fmt.Sprint(want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
}
