package zones

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// The drop directory's walking rules, shared by LoadDir and the Watcher:
// DESIGN.md's ignored names, unreadable subdirectories reported (the rest
// still loads), visible symlinks to files followed, symlinked directories not
// descended but handed on as files (they fail as "is a directory"), and
// entries that vanish while the walk runs left out (their removal raises
// its own event).

// walkRoot is the path to walk for dir: with a trailing separator when dir
// is itself a symlink, so the walk enters the directory it points to.
func walkRoot(dir string) string {
	if fi, err := os.Lstat(dir); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		return dir + string(filepath.Separator)
	}
	return dir
}

// errNotDir is checkDir's error for a path that is not a directory.
var errNotDir = errors.New("not a directory")

// checkDir fails unless dir is a readable directory.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return errNotDir
	}
	return nil
}

// listVisitor receives what walkLists finds. name is the path relative to
// the root with forward slashes.
type listVisitor struct {
	dir  func(path string)                                      // the root and each directory, before it is listed (may be nil)
	file func(name, path string, d fs.DirEntry, fi fs.FileInfo) // a list file, or a symlinked directory; fi is nil for a dangling symlink
	bad  func(name, path string, err *FileError)                // an unreadable directory
}

// walkLists walks root (see walkRoot) with the drop directory's rules.
func walkLists(root string, v listVisitor) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if p == root {
			if err == nil && v.dir != nil {
				v.dir(p)
			}
			return err
		}
		rel, rerr := filepath.Rel(root, p)
		if rerr != nil {
			return rerr
		}
		name := filepath.ToSlash(rel)
		if ignored(name) {
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if err != nil && errors.Is(err, fs.ErrNotExist) {
			return nil // removed since its directory was listed
		}
		if err != nil {
			// An unreadable subdirectory: report it, keep loading the rest.
			v.bad(name, p, &FileError{File: name, Reason: "cannot read: " + errText(err), Err: err})
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if v.dir != nil {
				v.dir(p)
			}
			return nil
		}
		// A symlinked directory is not descended: it is handed on like a
		// file, and fails to read as a directory.
		fi, err := os.Stat(p)
		if err != nil {
			// d may be out of date (a file replaced by a dangling link
			// since the listing): only a name that is gone is gone.
			if _, lerr := os.Lstat(p); errors.Is(lerr, fs.ErrNotExist) {
				return nil // removed since its directory was listed
			}
			fi = nil // a dangling link: the file fails to read
		}
		v.file(name, p, d, fi)
		return nil
	})
}
