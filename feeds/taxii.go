package feeds

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"strings"
	"time"
)

// taxiiAccept is the media type of TAXII 2.1 requests.
const taxiiAccept = "application/taxii+json;version=2.1"

// maxPages bounds one poll of a TAXII collection.
const maxPages = 10000

// fetchTAXII polls a TAXII 2.1 collection's objects endpoint: pages follow
// "next" while "more" is true; after the first poll only objects added
// after the last one are asked for (added_after), and the feed file keeps
// the previous indicators by id, updated by the new ones.
func (u *Updater) fetchTAXII(ctx context.Context, f Feed, st State, force bool) (Report, State, error) {
	rep := Report{}
	prev := newIndicatorSet()
	addedAfter := st.AddedAfter
	if force {
		addedAfter = ""
	}
	if addedAfter != "" {
		if err := prev.readFile(u.Path(f.Name)); err != nil {
			return rep, st, err
		}
	}
	started := u.cfg.Now().UTC()
	h := sha256.New()
	newObjects := 0
	lastAdded := ""
	next := ""
	for page := 0; ; page++ {
		if page >= maxPages {
			return rep, st, fmt.Errorf("feeds: taxii: more than %d pages", maxPages)
		}
		pu, err := url.Parse(f.URL)
		if err != nil {
			return rep, st, fmt.Errorf("feeds: url: %w", err)
		}
		q := pu.Query()
		if addedAfter != "" {
			q.Set("added_after", addedAfter)
		}
		if next != "" {
			q.Set("next", next)
		}
		pu.RawQuery = q.Encode()
		body, hdr, err := u.open(ctx, f, pu.String(), st, false, taxiiAccept)
		if err != nil {
			return rep, st, err
		}
		lr := &limited{r: body, max: f.MaxSize, h: h}
		env, n, err := prev.addPage(lr, u.cfg.Now())
		newObjects += n
		body.Close()
		rep.Bytes += lr.n
		if err != nil {
			return rep, st, err
		}
		if v := hdr.Get("X-TAXII-Date-Added-Last"); v != "" {
			lastAdded = v
		}
		if !env.More || env.Next == "" {
			break
		}
		next = env.Next
	}
	nst := st
	nst.AddedAfter = lastAdded
	if nst.AddedAfter == "" {
		nst.AddedAfter = started.Format("2006-01-02T15:04:05.000Z")
	}
	if newObjects == 0 && addedAfter != "" {
		rep.Result, rep.Rules = ResultNotModified, st.Rules
		return rep, nst, nil
	}
	tmp, err := u.convert(f, prev.write)
	if err != nil {
		return rep, st, err
	}
	defer os.Remove(tmp.path)
	rep.Rules = tmp.rules
	nst.SHA256, nst.Rules, nst.Bytes, nst.ETag, nst.LastModified = hex.EncodeToString(h.Sum(nil)), tmp.rules, rep.Bytes, "", ""
	if err := u.apply(f, st, nst, tmp, force); err != nil {
		return rep, st, err
	}
	rep.Result = ResultOK
	return rep, nst, nil
}

// indicatorSet is a TAXII feed's indicators by id (indicatorKey), in
// first-seen order.
type indicatorSet struct {
	order []string
	lines map[string][]string
}

func newIndicatorSet() *indicatorSet { return &indicatorSet{lines: map[string][]string{}} }

// set replaces an indicator's lines; no lines removes it.
func (s *indicatorSet) set(id string, lines []string) {
	if _, ok := s.lines[id]; !ok {
		if len(lines) == 0 {
			return
		}
		s.order = append(s.order, id)
	}
	s.lines[id] = lines // nil: revoked or expired, written as nothing
}

// addPage reads one page of a TAXII envelope (or a STIX bundle): each
// indicator's lines replace the ones it had. An indicator without a usable
// id (STIX requires one) is skipped: it could never be updated or revoked.
// It returns the paging fields and the number of indicators read.
func (s *indicatorSet) addPage(r io.Reader, now time.Time) (envelope, int, error) {
	n := 0
	env, err := decodeObjects(r, func(o *stixObject) error {
		if o.Type != "indicator" {
			return nil
		}
		n++
		key := indicatorKey(o.ID)
		if key == "" {
			return nil
		}
		lines, _ := indicatorLines(o, now)
		s.set(key, lines)
		return nil
	})
	return env, n, err
}

// write writes the rule lines of every indicator, in first-seen order.
func (s *indicatorSet) write(lw *lineWriter) error {
	for _, id := range s.order {
		for _, l := range s.lines[id] {
			if err := lw.line([]byte(l)); err != nil {
				return err
			}
		}
	}
	return nil
}

// readFile loads the indicators of a feed file written before: rule lines
// whose note starts with the indicator id.
func (s *indicatorSet) readFile(path string) error {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("feeds: %w", err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		_, note, ok := strings.Cut(line, " # ")
		if !ok {
			continue
		}
		id, _, _ := strings.Cut(note, " ")
		if _, seen := s.lines[id]; !seen {
			s.order = append(s.order, id)
		}
		s.lines[id] = append(s.lines[id], line)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("feeds: %s: %w", path, err)
	}
	return nil
}
