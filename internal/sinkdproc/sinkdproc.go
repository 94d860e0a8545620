// Package sinkdproc builds and runs the real sinkd binary for the load
// tools under bench/, and reads what they watch from outside the process:
// gauges on /metrics, the resident set size and the kernel's drop counter
// of its UDP socket. Everything it talks to is on loopback.
package sinkdproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Build compiles ./cmd/sinkd (relative to the working directory, the
// repository root) into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "sinkd")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/sinkd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("sinkdproc: go build ./cmd/sinkd: %v\n%s", err, out)
	}
	return bin, nil
}

// Process is a running `sinkd serve`.
type Process struct {
	DNS  string // the first DNS address it serves (host:port)
	HTTP string // its listen.http address (host:port), "" if off

	cmd  *exec.Cmd
	logf *os.File
	done chan struct{} // closed once it has exited and its log is copied
	err  error         // Wait's error, set before done is closed
}

// servingRe matches the "sinkd serving" log line (text format) and captures
// the DNS addresses and the HTTP address.
var servingRe = regexp.MustCompile(`msg="sinkd serving".* dns="?\[(.*?)\]"? http=(\S*)`)

// serving parses the "sinkd serving" log line: the first DNS address and
// the HTTP address ("" if off).
func serving(line string) (dns, http string, ok bool) {
	m := servingRe.FindStringSubmatch(line)
	if m == nil {
		return "", "", false
	}
	dns, _, _ = strings.Cut(m[1], " ")
	if http = m[2]; http == `""` {
		http = ""
	}
	return dns, http, dns != ""
}

// startTimeout bounds how long Start waits for the "sinkd serving" line:
// loading a big list on a busy machine takes a while.
const startTimeout = 2 * time.Minute

// Start runs `bin serve -config config`, copies its log (stderr) to
// logPath, and returns once it logs that it is serving.
func Start(bin, config, logPath string) (*Process, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("sinkdproc: %w", err)
	}
	p := &Process{logf: logf, done: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve", "-config", config)
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	if err := p.cmd.Start(); err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("sinkdproc: %w", err)
	}
	found := make(chan [2]string, 1)
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logf, sc.Text())
			if d, h, ok := serving(sc.Text()); ok {
				select {
				case found <- [2]string{d, h}:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr) // a line too long: keep the pipe drained
	}()
	go func() {
		p.err = p.cmd.Wait()
		_ = pw.Close()
		<-copied
		_ = logf.Close()
		close(p.done)
	}()
	select {
	case a := <-found:
		p.DNS, p.HTTP = a[0], a[1]
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("sinkdproc: sinkd exited before serving (%v): see %s", p.err, logPath)
	case <-time.After(startTimeout):
		p.Kill()
		return nil, fmt.Errorf("sinkdproc: sinkd not serving after %v: see %s", startTimeout, logPath)
	}
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Kill kills the process (SIGKILL) and waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Terminate sends SIGTERM and waits up to timeout for the process to exit;
// past that it is killed. It returns an error unless the process exited
// with status 0 in time.
func (p *Process) Terminate(timeout time.Duration) error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("sinkdproc: SIGTERM: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("sinkdproc: sinkd still running %v after SIGTERM: killed", timeout)
	}
	if p.err != nil {
		return fmt.Errorf("sinkdproc: sinkd after SIGTERM: %w", p.err)
	}
	return nil
}

// Scrape fetches http://addr/metrics.
func Scrape(c *http.Client, addr string) ([]byte, error) {
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("sinkdproc: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("sinkdproc: /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sinkdproc: /metrics: %s", resp.Status)
	}
	return b, nil
}

// Value is the value of the first sample of metric name in a Prometheus
// text exposition; name may carry labels as the exposition prints them
// (`sinkd_evidence_lost_total{reason="torn"}`).
func Value(exposition []byte, name string) (float64, bool) {
	prefix := []byte(name + " ")
	for line := range bytes.Lines(exposition) {
		if v, ok := bytes.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(string(bytes.TrimSpace(v)), 64)
			return f, err == nil
		}
	}
	return 0, false
}

var rssRe = regexp.MustCompile(`(?m)^VmRSS:\s+(\d+) kB$`)

// RSS is the resident set size of process pid in bytes, from
// /proc/PID/status (Linux).
func RSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("sinkdproc: %w", err)
	}
	g := rssRe.FindSubmatch(b)
	if g == nil {
		return 0, errors.New("sinkdproc: no VmRSS in /proc/PID/status")
	}
	v, err := strconv.ParseInt(string(g[1]), 10, 64)
	return v << 10, err
}

// UDPDrops is the drops counter of the IPv4 UDP sockets bound to addr, from
// /proc/net/udp (Linux): datagrams the kernel dropped because the
// socket's receive buffer was full. ok is false if there is no such socket.
func UDPDrops(addr string) (drops int64, ok bool) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, false
	}
	p, _ := strconv.Atoi(port)
	local := fmt.Sprintf("0100007F:%04X", p)
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(b) {
		f := bytes.Fields(line)
		if len(f) < 13 || string(f[1]) != local {
			continue
		}
		d, _ := strconv.ParseInt(string(f[len(f)-1]), 10, 64)
		drops += d
		ok = true
	}
	return drops, ok
}

// LoadAvg is the machine's 1, 5 and 15 minute load averages, as
// /proc/loadavg says them ("?" where it cannot be read): the context of a
// benchmark figure on a shared machine.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
