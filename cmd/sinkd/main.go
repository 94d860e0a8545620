// Command sinkd is a DNS sinkhole resolver: it forwards and caches queries,
// and answers names, CNAME targets and addresses on malicious lists with a
// sinkhole address. Subcommands: serve (default), check, hits, verify,
// feeds, version.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// Set at build time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

// errUsage makes run exit 2.
var errUsage = errors.New("usage")

// errFailed makes run exit 1 without a further message (the command has
// already said what failed).
var errFailed = errors.New("failed")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, errHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	case errors.Is(err, errFailed):
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "sinkd:", err)
		os.Exit(1)
	}
}

const usage = `usage: sinkd [command] [flags]

commands:
  serve    answer DNS queries (the default)
  check    lint list files, or explain why a name or address is listed
  hits     search the evidence log (hit records): by client, name, list, time
  verify   check the evidence log's hash chain
  feeds    fetch subscribed threat feeds now (update) or show their state (list)
  version  print version, commit and Go version

Run 'sinkd COMMAND -h' for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return runServe(ctx, args, stderr)
	case "check":
		return runCheck(args, stdout, stderr)
	case "hits":
		return runHits(ctx, args, stdout, stderr)
	case "verify":
		return runVerify(ctx, args, stdout, stderr)
	case "feeds":
		return runFeeds(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "sinkd %s (commit %s, %s %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprintf(stderr, "sinkd: unknown command %q\n\n%s", cmd, usage)
		return errUsage
	}
}

// parseFlags parses a command's flags; -h is not an error.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	return nil
}

var errHelp = errors.New("help")

// newLogger builds the process logger from log.level and log.format.
func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
