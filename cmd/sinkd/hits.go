package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sinkd/sinkd/sinkhole"
)

// followPoll is how often `hits -follow` looks for new records.
const followPoll = 250 * time.Millisecond

// runHits searches the evidence log: `sinkd hits [-config F] [-dir D]
// [-type hit|contact|all] [-client ADDR|CIDR] [-mac MAC] [-name NAME]
// [-list LIST] [-trigger T] [-since T] [-until T] [-limit N] [-summary]
// [-follow] [-format table|json|csv|ecs]`. Records print in log order; no
// match is not an error.
func runHits(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hits", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file: its evidence.dir")
	dir := fs.String("dir", "", "evidence directory (default: evidence.dir)")
	typ := fs.String("type", "hit", "record type: hit, contact or all")
	client := fs.String("client", "", "client address or CIDR")
	mac := fs.String("mac", "", "client MAC address")
	name := fs.String("name", "", "query name, with its subdomains")
	list := fs.String("list", "", "list name (as in zones.dir: malware.txt, feeds/x.txt)")
	trigger := fs.String("trigger", "", "qname, cname, ip or client")
	since := fs.String("since", "", "records from this time on: RFC 3339, or a duration back from now (24h, 7d)")
	until := fs.String("until", "", "records before this time: RFC 3339, or a duration back from now")
	limit := fs.Int("limit", 0, "only the newest N matching records")
	summary := fs.Bool("summary", false, "per client first seen, last seen, hits, names and contacts; the clients that connected to the sinkhole first; top names and lists")
	follow := fs.Bool("follow", false, "then print new matching records as they are written, until interrupted")
	format := fs.String("format", sinkhole.FormatTable, "table, json, csv or ecs")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	usage := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "sinkd hits: "+format+"\n", a...)
		return errUsage
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q", fs.Arg(0))
	}
	if *summary && *follow {
		return usage("-summary and -follow do not go together")
	}
	q := sinkhole.HitQuery{Type: *typ, MAC: *mac, Name: *name, List: *list, Trigger: *trigger, Limit: *limit}
	var err error
	if *client != "" {
		if q.Client, err = sinkhole.ParseClient(*client); err != nil {
			return usage("%v", err)
		}
	}
	now := time.Now()
	if *since != "" {
		if q.Since, err = sinkhole.ParseTime(*since, now); err != nil {
			return usage("-since: %v", err)
		}
	}
	if *until != "" {
		if q.Until, err = sinkhole.ParseTime(*until, now); err != nil {
			return usage("-until: %v", err)
		}
	}
	if err := q.Validate(); err != nil {
		return usage("%v", err)
	}
	d, _, err := evidenceLocation(*cfgPath, *dir, "", false)
	if err != nil {
		return err
	}

	if *summary {
		if *format != sinkhole.FormatTable && *format != sinkhole.FormatJSON {
			return usage("-summary prints table or json, not %q", *format)
		}
		s := sinkhole.NewSummary()
		if err := sinkhole.SearchLog(ctx, d, q, func(line []byte) error { s.Add(line); return nil }); err != nil {
			return err
		}
		if *format == sinkhole.FormatJSON {
			return s.WriteJSON(stdout, 10)
		}
		return s.WriteText(stdout, 10)
	}

	rw, err := sinkhole.NewRecordWriter(stdout, *format)
	if err != nil {
		return usage("%v", err)
	}
	n := 0
	write := func(line []byte) error {
		n++
		return rw.Write(line)
	}
	if *follow {
		err = sinkhole.FollowLog(ctx, d, q, followPoll, func(line []byte) error {
			if err := write(line); err != nil {
				return err
			}
			return rw.Flush()
		})
	} else {
		err = sinkhole.SearchLog(ctx, d, q, write)
	}
	if ferr := rw.Flush(); err == nil {
		err = ferr
	}
	if errors.Is(err, context.Canceled) && *follow {
		err = nil
	}
	if err == nil && n == 0 && *format == sinkhole.FormatTable && !*follow {
		fmt.Fprintln(stderr, "sinkd hits: no matching records")
	}
	if err != nil && strings.Contains(err.Error(), "broken pipe") {
		return nil // | head
	}
	return err
}
