package sinkhole

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LogRecord is a record of the evidence log decoded, for display. The JSON
// output formats keep the stored line itself.
type LogRecord struct {
	Type       string   `json:"type"`
	Seq        uint64   `json:"seq"`
	TS         string   `json:"ts"`
	Instance   string   `json:"instance"`
	Client     string   `json:"client"`
	ClientPort int      `json:"client_port"`
	Proto      string   `json:"proto"`
	QName      string   `json:"qname"`
	QType      string   `json:"qtype"`
	Trigger    string   `json:"trigger"`
	Match      string   `json:"match"`
	Rule       string   `json:"rule"`
	List       string   `json:"list"`
	ListSHA256 string   `json:"list_sha256"`
	Action     string   `json:"action"`
	Answer     []string `json:"answer"`
	Upstream   []string `json:"upstream"`
	MAC        string   `json:"mac"`
	Host       string   `json:"host"`
	Category   string   `json:"category"`
	Rcode      string   `json:"rcode"`
	Note       string   `json:"note"`

	Version   string         `json:"version"`
	Chain     string         `json:"chain"`
	Sources   []ReloadSource `json:"sources"`
	Changed   []ReloadChange `json:"changed"`
	Reason    string         `json:"reason"`
	Lost      int64          `json:"lost"`
	From      string         `json:"from"`
	Until     string         `json:"until"`
	Segment   string         `json:"segment"`
	FirstSeq  uint64         `json:"first_seq"`
	LastSeq   uint64         `json:"last_seq"`
	FinalHash string         `json:"final_hash"`

	// contact records (package listener)
	Sinkhole     string `json:"sinkhole"`
	SinkholePort int    `json:"sinkhole_port"`
	Kind         string `json:"kind"`
	Bytes        int64  `json:"bytes"`
	HitSeq       uint64 `json:"hit_seq"`
	HitQName     string `json:"hit_qname"`

	Prev string `json:"prev"`
	Hash string `json:"hash"`
}

// Output formats of `sinkd hits`.
const (
	FormatTable = "table"
	FormatJSON  = "json"
	FormatCSV   = "csv"
	FormatECS   = "ecs"
)

// CSVHeader is the header row of the csv format.
const CSVHeader = "type,seq,ts,instance,client,client_port,mac,host,proto,qname,qtype,trigger,match,rule,list,list_sha256,action,answer,upstream"

// RecordWriter writes record lines in one of the `sinkd hits` formats:
//
//   - json: each line as stored.
//   - csv: CSVHeader, then one row per record; answer and upstream joined
//     by " | ".
//   - ecs: Elastic Common Schema, one JSON object per line, the whole
//     record under "sinkd".
//   - table: fixed columns TIME (UTC, ms) CLIENT HOST QTYPE QNAME TRIGGER
//     ACTION LIST RULE; HOST is the host name, else the mac, else "-";
//     RULE adds "(match X)" when X is not the qname. Records other than
//     hits and contacts print TIME, [type] and their fields.
type RecordWriter struct {
	w      *bufio.Writer
	format string
	csv    *csv.Writer
	header bool
}

// NewRecordWriter returns a writer of format (table, json, csv, ecs).
func NewRecordWriter(w io.Writer, format string) (*RecordWriter, error) {
	switch format {
	case FormatTable, FormatJSON, FormatCSV, FormatECS:
	default:
		return nil, fmt.Errorf("%w: format %q: want table, json, csv or ecs", ErrBadQuery, format)
	}
	rw := &RecordWriter{w: bufio.NewWriterSize(w, 64<<10), format: format}
	if format == FormatCSV {
		rw.csv = csv.NewWriter(rw.w)
	}
	return rw, nil
}

// Write writes one stored line.
func (rw *RecordWriter) Write(line []byte) error {
	if rw.format == FormatJSON {
		rw.w.Write(line)
		return rw.w.WriteByte('\n')
	}
	var r LogRecord
	if err := json.Unmarshal(line, &r); err != nil {
		return fmt.Errorf("sinkhole: evidence: undecodable record: %w", err)
	}
	switch rw.format {
	case FormatCSV:
		if !rw.header {
			rw.header = true
			if err := rw.csv.Write(strings.Split(CSVHeader, ",")); err != nil {
				return err
			}
		}
		port := ""
		if r.Client != "" {
			port = strconv.Itoa(r.ClientPort)
		}
		qname := cmp.Or(r.QName, r.HitQName)
		return rw.csv.Write([]string{r.Type, strconv.FormatUint(r.Seq, 10), r.TS, r.Instance, r.Client, port,
			r.MAC, r.Host, r.Proto, qname, r.QType, r.Trigger, r.Match, r.Rule, r.List, r.ListSHA256, r.Action,
			strings.Join(r.Answer, " | "), strings.Join(r.Upstream, " | ")})
	case FormatECS:
		b, err := json.Marshal(evECS(&r, line))
		if err != nil {
			return err
		}
		rw.w.Write(b)
		return rw.w.WriteByte('\n')
	default:
		return rw.table(&r)
	}
}

// Flush writes out what is buffered.
func (rw *RecordWriter) Flush() error {
	if rw.csv != nil {
		if !rw.header {
			rw.header = true
			_ = rw.csv.Write(strings.Split(CSVHeader, ","))
		}
		rw.csv.Flush()
		if err := rw.csv.Error(); err != nil {
			return err
		}
	}
	return rw.w.Flush()
}

// TableHeader is the table format's header line.
const TableHeader = "TIME                     CLIENT          HOST              QTYPE QNAME                          TRIGGER ACTION   LIST                 RULE"

func (rw *RecordWriter) table(r *LogRecord) error {
	if !rw.header {
		rw.header = true
		rw.w.WriteString(TableHeader + "\n")
	}
	ts := evShortTime(r.TS)
	switch r.Type {
	case "hit", "contact":
		host := cmp.Or(r.Host, r.MAC, "-")
		qname, trigger, action := cmp.Or(r.QName, r.HitQName, "-"), cmp.Or(r.Trigger, "-"), cmp.Or(r.Action, "-")
		qtype := cmp.Or(r.QType, "-")
		rule := cmp.Or(r.Rule, "-")
		if r.Type == "contact" {
			trigger, action, qtype = "contact", cmp.Or(r.Kind, "-"), strings.ToUpper(cmp.Or(r.Proto, "-"))
			rule = fmt.Sprintf("(to %s port %d, %d bytes, hit %d)", r.Sinkhole, r.SinkholePort, r.Bytes, r.HitSeq)
		} else if r.Match != "" && r.Match != r.QName {
			rule += " (match " + r.Match + ")"
		}
		_, err := fmt.Fprintf(rw.w, "%-24s %-15s %-17s %-5s %-30s %-7s %-8s %-20s %s\n",
			ts, cmp.Or(r.Client, "-"), host, qtype, qname, trigger, action, cmp.Or(r.List, "-"), rule)
		return err
	}
	var d string
	switch r.Type {
	case "start":
		d = fmt.Sprintf("version=%s chain=%s lists=%d", r.Version, r.Chain, len(r.Sources))
	case "stop":
		d = "reason=" + strconv.Quote(r.Reason)
	case "reload":
		d = fmt.Sprintf("lists=%d changed=%d", len(r.Sources), len(r.Changed))
	case "gap":
		d = fmt.Sprintf("lost=%d reason=%s from=%s until=%s", r.Lost, r.Reason, r.From, r.Until)
	case "prune":
		d = fmt.Sprintf("segment=%s seq=%d-%d final_hash=%s", r.Segment, r.FirstSeq, r.LastSeq, r.FinalHash)
	}
	_, err := fmt.Fprintf(rw.w, "%-24s [%s] %s\n", ts, r.Type, d)
	return err
}

// evShortTime shows ts to the millisecond.
func evShortTime(ts string) string {
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return ts
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

type ecsRecord struct {
	Timestamp string          `json:"@timestamp"`
	ECS       ecsVersion      `json:"ecs"`
	Event     ecsEvent        `json:"event"`
	Source    *ecsSource      `json:"source,omitempty"`
	DNS       *ecsDNS         `json:"dns,omitempty"`
	Rule      *ecsRule        `json:"rule,omitempty"`
	Observer  ecsObserver     `json:"observer"`
	Sinkd     json.RawMessage `json:"sinkd"`
}

type ecsVersion struct {
	Version string `json:"version"`
}

type ecsEvent struct {
	Kind     string   `json:"kind"`
	Category []string `json:"category"`
	Action   string   `json:"action,omitempty"`
	Type     []string `json:"type,omitempty"`
	Dataset  string   `json:"dataset"`
}

type ecsSource struct {
	IP     string `json:"ip"`
	Port   int    `json:"port,omitempty"`
	MAC    string `json:"mac,omitempty"`
	Domain string `json:"domain,omitempty"`
}

type ecsDNS struct {
	Question ecsQuestion `json:"question"`
}

type ecsQuestion struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type ecsRule struct {
	Name     string `json:"name,omitempty"`
	Ruleset  string `json:"ruleset,omitempty"`
	Category string `json:"category,omitempty"`
}

type ecsObserver struct {
	Name    string `json:"name"`
	Product string `json:"product"`
	Type    string `json:"type"`
}

// evECS maps a record to ECS 8: hits and contacts are alerts.
func evECS(r *LogRecord, line []byte) *ecsRecord {
	e := &ecsRecord{
		Timestamp: r.TS,
		ECS:       ecsVersion{Version: "8.11.0"},
		Event:     ecsEvent{Kind: "event", Category: []string{"network"}, Action: r.Action, Dataset: "sinkd." + r.Type},
		Observer:  ecsObserver{Name: r.Instance, Product: "sinkd", Type: "dns"},
		Sinkd:     json.RawMessage(line),
	}
	if r.Type == "hit" || r.Type == "contact" {
		e.Event.Kind = "alert"
		e.Event.Type = []string{"denied"}
		if r.Action == "log" || r.Type == "contact" {
			e.Event.Type = []string{"info"}
		}
	}
	if r.Type == "contact" {
		e.Event.Action = "contact-" + cmp.Or(r.Kind, "raw")
	}
	if r.Client != "" {
		e.Source = &ecsSource{IP: r.Client, Port: r.ClientPort, MAC: evECSMAC(r.MAC), Domain: r.Host}
	}
	if q := cmp.Or(r.QName, r.HitQName); q != "" {
		e.DNS = &ecsDNS{Question: ecsQuestion{Name: q, Type: r.QType}}
	}
	if r.Rule != "" || r.List != "" {
		e.Rule = &ecsRule{Name: r.Rule, Ruleset: r.List, Category: r.Category}
	}
	return e
}

// evECSMAC writes a MAC as ECS wants it: upper-case, hyphens.
func evECSMAC(mac string) string {
	return strings.ToUpper(strings.ReplaceAll(mac, ":", "-"))
}

// Summary aggregates hits and contacts per client, name and list (`sinkd
// hits -summary`). Clients that connected to the sinkhole listener (a
// contact record) come first: they are the machines to clean first.
type Summary struct {
	clients  map[string]*ClientSummary
	names    map[string]int
	lists    map[string]int
	fields   evFields
	contacts int
	Records  int // records added
}

// summaryMaxPorts bounds the sinkhole ports kept per client.
const summaryMaxPorts = 16

// ClientSummary is one client's line of a Summary.
type ClientSummary struct {
	Client       string    `json:"client"`
	FirstSeen    time.Time `json:"first_seen"` // any record
	LastSeen     time.Time `json:"last_seen"`
	Hits         int       `json:"hits"`     // DNS hits
	Names        int       `json:"names"`    // distinct qnames (of hits, and of the hits contacts link to)
	Contacts     int       `json:"contacts"` // connections to the sinkhole listener
	FirstContact time.Time `json:"first_contact,omitzero"`
	LastContact  time.Time `json:"last_contact,omitzero"`
	Ports        []int     `json:"ports,omitempty"` // sinkhole ports contacted, ascending (at most 16)
	names        map[string]struct{}
}

// Count is a name or list with its number of hits.
type Count struct {
	Key  string `json:"name"`
	Hits int    `json:"hits"`
}

// NewSummary returns an empty summary.
func NewSummary() *Summary {
	return &Summary{clients: map[string]*ClientSummary{}, names: map[string]int{}, lists: map[string]int{}}
}

// Add counts one record line.
func (s *Summary) Add(line []byte) {
	if !s.fields.scan(line) {
		return
	}
	s.Records++
	client := string(s.fields.get("client"))
	name := string(s.fields.str("qname"))
	if name == "" {
		name = string(s.fields.str("hit_qname"))
	}
	if list := s.fields.str("list"); len(list) > 0 {
		s.lists[string(list)]++
	}
	if name != "" {
		s.names[name]++
	}
	if client == "" {
		return
	}
	ts, _ := time.Parse(time.RFC3339Nano, string(s.fields.get("ts")))
	c := s.clients[client]
	if c == nil {
		c = &ClientSummary{Client: client, FirstSeen: ts, LastSeen: ts, names: map[string]struct{}{}}
		s.clients[client] = c
	}
	if string(s.fields.str("type")) == "contact" {
		s.contacts++
		c.Contacts++
		if c.FirstContact.IsZero() || ts.Before(c.FirstContact) {
			c.FirstContact = ts
		}
		if ts.After(c.LastContact) {
			c.LastContact = ts
		}
		if p, err := strconv.Atoi(string(s.fields.get("sinkhole_port"))); err == nil && len(c.Ports) < summaryMaxPorts {
			if i, found := slices.BinarySearch(c.Ports, p); !found {
				c.Ports = slices.Insert(c.Ports, i, p)
			}
		}
	} else {
		c.Hits++
	}
	if ts.Before(c.FirstSeen) {
		c.FirstSeen = ts
	}
	if ts.After(c.LastSeen) {
		c.LastSeen = ts
	}
	if _, ok := c.names[name]; !ok && name != "" {
		c.names[name] = struct{}{}
		c.Names++
	}
}

// Clients lists the clients, most contacts first, then most hits.
func (s *Summary) Clients() []ClientSummary {
	out := make([]ClientSummary, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, *c)
	}
	slices.SortFunc(out, func(a, b ClientSummary) int {
		if a.Contacts != b.Contacts {
			return b.Contacts - a.Contacts
		}
		if a.Hits != b.Hits {
			return b.Hits - a.Hits
		}
		return evCompareAddr(a.Client, b.Client)
	})
	return out
}

// Connected lists the clients that connected to the sinkhole listener,
// most contacts first: not only asked for a listed name, but tried to talk
// to it.
func (s *Summary) Connected() []ClientSummary {
	out := []ClientSummary{}
	for _, c := range s.Clients() {
		if c.Contacts == 0 {
			break
		}
		out = append(out, c)
	}
	return out
}

func evCompareAddr(a, b string) int {
	x, err1 := netip.ParseAddr(a)
	y, err2 := netip.ParseAddr(b)
	if err1 != nil || err2 != nil {
		return strings.Compare(a, b)
	}
	return x.Compare(y)
}

// Top returns the n names (or, with lists, lists) with most hits.
func (s *Summary) Top(n int, lists bool) []Count {
	m := s.names
	if lists {
		m = s.lists
	}
	out := make([]Count, 0, len(m))
	for k, v := range m {
		out = append(out, Count{Key: k, Hits: v})
	}
	slices.SortFunc(out, func(a, b Count) int {
		if a.Hits != b.Hits {
			return b.Hits - a.Hits
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// WriteText prints the summary: per client first seen, last seen, hits and
// distinct names (and contacts, when there are any); then the clients that
// connected to the sinkhole; then the top names and lists.
func (s *Summary) WriteText(w io.Writer, top int) error {
	const tsFormat = "2006-01-02T15:04:05.000Z"
	bw := bufio.NewWriter(w)
	if s.contacts == 0 {
		fmt.Fprintf(bw, "%-39s %-24s %-24s %8s %6s\n", "CLIENT", "FIRST SEEN", "LAST SEEN", "HITS", "NAMES")
		for _, c := range s.Clients() {
			fmt.Fprintf(bw, "%-39s %-24s %-24s %8d %6d\n", c.Client, c.FirstSeen.UTC().Format(tsFormat),
				c.LastSeen.UTC().Format(tsFormat), c.Hits, c.Names)
		}
	} else {
		fmt.Fprintf(bw, "%-39s %-24s %-24s %8s %6s %8s\n", "CLIENT", "FIRST SEEN", "LAST SEEN", "HITS", "NAMES", "CONTACTS")
		for _, c := range s.Clients() {
			fmt.Fprintf(bw, "%-39s %-24s %-24s %8d %6d %8d\n", c.Client, c.FirstSeen.UTC().Format(tsFormat),
				c.LastSeen.UTC().Format(tsFormat), c.Hits, c.Names, c.Contacts)
		}
		fmt.Fprintf(bw, "\nCLIENTS THAT CONNECTED (clean these first)\n%-39s %8s %-24s %-24s %s\n",
			"CLIENT", "CONTACTS", "FIRST CONTACT", "LAST CONTACT", "PORTS")
		for _, c := range s.Connected() {
			ports := make([]string, len(c.Ports))
			for i, p := range c.Ports {
				ports[i] = strconv.Itoa(p)
			}
			fmt.Fprintf(bw, "%-39s %8d %-24s %-24s %s\n", c.Client, c.Contacts, c.FirstContact.UTC().Format(tsFormat),
				c.LastContact.UTC().Format(tsFormat), strings.Join(ports, ","))
		}
	}
	fmt.Fprintf(bw, "\n%8s  %s\n", "HITS", "TOP NAMES")
	for _, c := range s.Top(top, false) {
		fmt.Fprintf(bw, "%8d  %s\n", c.Hits, c.Key)
	}
	fmt.Fprintf(bw, "\n%8s  %s\n", "HITS", "TOP LISTS")
	for _, c := range s.Top(top, true) {
		fmt.Fprintf(bw, "%8d  %s\n", c.Hits, c.Key)
	}
	return bw.Flush()
}

// WriteJSON prints the summary as one JSON object {clients, connected,
// names, lists}; connected are the clients with contacts.
func (s *Summary) WriteJSON(w io.Writer, top int) error {
	type listCount struct {
		List string `json:"list"`
		Hits int    `json:"hits"`
	}
	var lists []listCount
	for _, c := range s.Top(top, true) {
		lists = append(lists, listCount{c.Key, c.Hits})
	}
	return json.NewEncoder(w).Encode(struct {
		Clients   []ClientSummary `json:"clients"`
		Connected []ClientSummary `json:"connected"`
		Names     []Count         `json:"names"`
		Lists     []listCount     `json:"lists"`
	}{s.Clients(), s.Connected(), s.Top(top, false), lists})
}

// Limits of /api/v1/hits.
const (
	DefaultAPILimit = 1000
	MaxAPILimit     = 100000
)

// HitsHandler serves GET /api/v1/hits: the records of the log in dir
// matching the query parameters type, client, mac, name, list, trigger,
// since, until (as `sinkd hits` takes them) as a JSON array, in log order.
// limit (default 1000, at most 100000) keeps the newest. A bad parameter
// is 400.
func HitsHandler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := evQueryFromURL(r, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var lines [][]byte
		err = SearchLog(r.Context(), dir, q, func(line []byte) error {
			lines = append(lines, append([]byte(nil), line...))
			return nil
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriter(w)
		bw.WriteString("[")
		for i, l := range lines {
			if i > 0 {
				bw.WriteString(",\n")
			} else {
				bw.WriteString("\n")
			}
			bw.Write(l)
		}
		bw.WriteString("\n]\n")
		_ = bw.Flush()
	})
}

func evQueryFromURL(r *http.Request, now time.Time) (HitQuery, error) {
	v := r.URL.Query()
	q := HitQuery{Type: v.Get("type"), MAC: v.Get("mac"), Name: v.Get("name"), List: v.Get("list"),
		Trigger: v.Get("trigger"), Limit: DefaultAPILimit}
	var err error
	if s := v.Get("client"); s != "" {
		if q.Client, err = ParseClient(s); err != nil {
			return q, err
		}
	}
	if s := v.Get("since"); s != "" {
		if q.Since, err = ParseTime(s, now); err != nil {
			return q, err
		}
	}
	if s := v.Get("until"); s != "" {
		if q.Until, err = ParseTime(s, now); err != nil {
			return q, err
		}
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxAPILimit {
			return q, fmt.Errorf("%w: limit %q: want 1 to %d", ErrBadQuery, s, MaxAPILimit)
		}
		q.Limit = n
	}
	return q, q.Validate()
}
