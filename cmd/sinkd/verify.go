package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/sinkd/sinkd/sinkhole"
)

// runVerify checks the hash chain of the evidence log: `sinkd verify
// [-config F|-dir D] [-key F]`. It prints "ok: N records in M segments,
// final hash HEX", or "FILE:LINE: reason" at the first broken link and
// fails (exit 1).
func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "YAML config file: its evidence.dir and evidence.hmac_key_file")
	dir := fs.String("dir", "", "evidence directory (default: evidence.dir)")
	keyPath := fs.String("key", "", "HMAC key file of an HMAC-SHA-256 chain (default: evidence.hmac_key_file)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sinkd verify: unexpected argument %q\n", fs.Arg(0))
		return errUsage
	}
	d, key, err := evidenceLocation(*cfgPath, *dir, *keyPath, true)
	if err != nil {
		return err
	}
	res, err := sinkhole.Verify(ctx, d, key)
	var ve *sinkhole.VerifyError
	if errors.As(err, &ve) {
		fmt.Fprintln(stdout, ve.Error())
		return errFailed
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ok: %d records in %d segments, final hash %s\n", res.Records, res.Segments, res.FinalHash)
	if res.Incomplete {
		fmt.Fprintf(stderr, "sinkd verify: %s:%d: incomplete last line (being written, or torn by a crash; the next start cuts it): not counted\n",
			res.IncompleteFile, res.IncompleteLine)
	}
	return nil
}

// evidenceLocation resolves -config, -dir and -key of verify and hits: the
// flags win over evidence.dir and evidence.hmac_key_file.
func evidenceLocation(cfgPath, dir, keyPath string, needKey bool) (string, []byte, error) {
	f, err := readConfigFile(cfgPath)
	if err != nil {
		return "", nil, err
	}
	if !needKey {
		// Searching needs no key: an analyst without access to it can still
		// read the log.
		f.Evidence.HMACKeyFile = ""
	}
	cfg, err := buildConfig(f, "")
	if err != nil {
		return "", nil, err
	}
	if dir == "" {
		dir = cfg.evidence.Dir
	}
	key := cfg.evidence.HMACKey
	if keyPath != "" {
		if key, err = sinkhole.ReadHMACKey(keyPath); err != nil {
			return "", nil, err
		}
	}
	return dir, key, nil
}
