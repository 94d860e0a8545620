package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sinkd/sinkd/sinkhole"
	"github.com/sinkd/sinkd/zones"
)

// runCheck lints list files without serving: `sinkd check [-config F]
// [-format text|json] [-q X] [FILE...]`; no FILE means all of zones.dir.
// With -q it explains why X (a name or an address) would be blocked.
func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file (for zones.dir and sinkhole.action)")
	format := fs.String("format", "text", "output format: text or json")
	q := fs.String("q", "", "explain whether this name or address is listed, and by which rule")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "sinkd check: -format %q: want text or json\n", *format)
		return errUsage
	}
	cfg, err := loadConfig(*cfgPath, "")
	if err != nil {
		return err
	}
	var results []zones.Result
	if fs.NArg() == 0 {
		if _, err := os.Stat(cfg.zonesDir); err != nil {
			return fmt.Errorf("check: zones.dir: %w", err)
		}
		if results, err = zones.LoadDir(cfg.zonesDir, cfg.settings.Action, cfg.zonesMaxFileSize); err != nil {
			return fmt.Errorf("check: %w", err)
		}
	} else {
		for _, f := range fs.Args() {
			results = append(results, zones.ParseFile(f, f, cfg.settings.Action, cfg.zonesMaxFileSize))
		}
	}

	if *q != "" {
		return explain(stdout, zones.Compile(cfg.settings, results), *q)
	}
	if err := zones.WriteCheck(stdout, *format, results); err != nil {
		return err
	}
	for _, r := range results {
		if r.Status != "ok" {
			return errFailed
		}
	}
	return nil
}

// explain prints the one line of `check -q X`.
func explain(w io.Writer, p *sinkhole.Policy, x string) error {
	v := p.Explain(x)
	switch {
	case !v.Hit():
		fmt.Fprintf(w, "%s: not listed\n", x)
	case v.Allowed:
		fmt.Fprintf(w, "%s: allowed by %s rule %s\n", x, v.Source.Name, v.Rule())
	default:
		fmt.Fprintf(w, "%s: blocked by %s rule %s trigger=%s action=%s\n", x, v.Source.Name, v.Rule(), v.Trigger, v.Action)
	}
	return nil
}
