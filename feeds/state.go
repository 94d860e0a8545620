package feeds

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// StateFile is the name of the state file in zones.dir/feeds/.
const StateFile = ".state.json"

// State is what is known of one feed between fetches; `sinkd feeds list`
// prints it.
type State struct {
	LastCheck    time.Time `json:"last_check,omitzero"`
	LastSuccess  time.Time `json:"last_success,omitzero"`
	LastError    string    `json:"last_error,omitempty"`
	HeldBack     bool      `json:"held_back,omitempty"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	SHA256       string    `json:"sha256,omitempty"`
	Rules        int       `json:"rules"`
	Bytes        int64     `json:"bytes"`
	AddedAfter   string    `json:"added_after,omitempty"` // taxii: the next poll's added_after
}

// ReadState reads the state of every feed from dir (zones.dir/feeds). A
// missing file is an empty state.
func ReadState(dir string) (map[string]State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("feeds: state: %w", err)
	}
	st := map[string]State{}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("feeds: state %s: %w", filepath.Join(dir, StateFile), err)
	}
	return st, nil
}

// writeState replaces one feed's entry, keeping the others (another
// process, serve or `sinkd feeds`, may have written them).
func writeState(dir, name string, s State) error {
	all, err := ReadState(dir)
	if err != nil {
		all = map[string]State{} // a corrupt state file is rebuilt
	}
	all[name] = s
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return fmt.Errorf("feeds: state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".state-*.tmp")
	if err != nil {
		return fmt.Errorf("feeds: state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("feeds: state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("feeds: state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, StateFile)); err != nil {
		return fmt.Errorf("feeds: state: %w", err)
	}
	return nil
}
