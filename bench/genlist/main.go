// Command genlist writes a deterministic synthetic block list (one rule per
// line: domain names, then IPv4/IPv6 addresses and CIDRs) for benchmarks:
//
//	go run ./bench/genlist -domains 1000000 -ips 100000 -o /tmp/big.txt
package main

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sinkd/sinkd/internal/synth"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("genlist", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domains := fs.Int("domains", 1000, "number of distinct domain names")
	ips := fs.Int("ips", 0, "number of distinct addresses and CIDRs (IPv4 and IPv6)")
	seed := fs.Uint64("seed", 1, "generator seed: the same seed writes the same file")
	out := fs.String("o", "-", "output file (- for standard output)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *domains < 0 || *ips < 0 {
		fs.Usage()
		return 2
	}
	if *out == "-" {
		if err := synth.WriteList(stdout, *seed, *domains, *ips); err != nil {
			fmt.Fprintln(stderr, "genlist:", err)
			return 1
		}
		return 0
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintln(stderr, "genlist:", err)
		return 1
	}
	err = synth.WriteList(f, *seed, *domains, *ips)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(stderr, "genlist:", err)
		return 1
	}
	return 0
}
