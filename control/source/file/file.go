// Package file is the config source that reads a folder of YAML manifests and watches it.
//
// Every file whose name ends in .yaml or .yml, in the folder and its sub-folders, is read as
// multi-document YAML; folders and files whose names start with a dot (editor files, version
// control, the "..data" folders of a mounted Kubernetes ConfigMap) are skipped, and symbolic links
// to files are followed while links to folders are not. Files are read in path order, which is the
// "file order" that decides between two objects competing for one thing.
//
// A document that is not a good object is reported and skipped. When an object that was served
// turns bad, or sits in a file that stopped being valid YAML, its last good version keeps being
// served, with a warning, until it is fixed or removed; objects beside it are not affected.
package file

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/meltemi-mesh/meltemi/control/model"
	"github.com/meltemi-mesh/meltemi/control/source"
)

// Options configure a Source; zero values take the defaults.
type Options struct {
	// Model is passed to model.Build for every snapshot.
	Model model.Options
	// Quiet is how long the folder must stay unchanged before it is read again; 100 ms by default.
	Quiet time.Duration
	// MaxDelay bounds how long a stream of changes can postpone reading; 1 s by default.
	MaxDelay time.Duration
	// Logger receives what goes wrong with watching; nothing is logged by default.
	Logger *slog.Logger
}

// Source reads a folder of manifests into model snapshots. Scan and Run must not be called at the
// same time.
type Source struct {
	root string
	opts Options

	files    map[string]cachedFile      // by path: the last content read and what it decoded to
	good     map[model.Key]model.Object // the objects of the last snapshot
	version  uint64
	snap     *model.Snapshot
	problems []model.Problem
}

type cachedFile struct {
	sum  [sha256.Size]byte
	docs []parsedDoc
}

// New returns a source for root, a folder (or, for Scan only, a single file).
func New(root string, opts Options) *Source {
	if opts.Quiet <= 0 {
		opts.Quiet = 100 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Source{root: root, opts: opts, files: map[string]cachedFile{}, good: map[model.Key]model.Object{}}
}

// Scan reads the folder once and returns the snapshot and problems. It fails only when the folder
// itself cannot be read.
func (s *Source) Scan() (source.Update, error) {
	u, _, err := s.scan()
	return u, err
}

// Run publishes a first update, then watches the folder and publishes an update after each burst of
// changes that changes the snapshot or the problems, until ctx is done. publish is called from Run's
// goroutine, one update at a time. Run fails if the folder cannot be read or watched at the start;
// later failures are reported as problems, and the last good objects keep being served.
func (s *Source) Run(ctx context.Context, publish func(source.Update)) error {
	info, err := os.Stat(s.root)
	if err != nil {
		return fmt.Errorf("config folder: %w", err)
	}
	if !info.IsDir() {
		return fmt.Errorf("config folder %s: not a folder", s.root)
	}
	w, err := newWatcher(s.root)
	if err != nil {
		return err
	}
	defer w.close()
	// Watches go on before the first read, so no change made after that read is missed.
	w.watchFolders(s.opts.Logger)
	u, _, err := s.scan()
	if err != nil {
		return err
	}
	publish(u)

	d := source.NewDebouncer(s.opts.Quiet, s.opts.MaxDelay)
	defer d.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.events():
			if !ok {
				return errors.New("config folder watcher stopped")
			}
			if ev.Op == fsnotify.Chmod {
				continue // permissions alone change nothing that is read
			}
			d.Trigger()
		case err := <-w.errors():
			// An overflowed queue lost events: reading again catches up whatever they were.
			s.opts.Logger.Warn("watching config folder", "folder", s.root, "error", err)
			d.Trigger()
		case <-d.C():
			d.Fired()
			// A folder created since the last read gets its watch before it is read.
			w.watchFolders(s.opts.Logger)
			u, changed, err := s.scan()
			if err != nil {
				s.opts.Logger.Warn("reading config folder", "folder", s.root, "error", err)
			}
			if changed {
				publish(u)
			}
		}
	}
}

// scan reads the folder and builds a snapshot if the objects changed. changed reports whether the
// update differs from the previous one.
func (s *Source) scan() (u source.Update, changed bool, err error) {
	paths, walkProblems, err := s.list()
	if err != nil {
		if s.snap == nil {
			return source.Update{}, false, err
		}
		// Serve what was served, and say why nothing changes; the problems of single objects are not
		// known until the folder can be read again.
		p := model.Problem{Origin: model.Origin{File: s.root}, Message: fmt.Sprintf("cannot read the folder: %v", err)}
		problems := append([]model.Problem{p}, s.snap.Problems...)
		changed = !slices.Equal(problems, s.problems)
		s.problems = problems
		return source.Update{Snapshot: s.snap, Problems: problems}, changed, err
	}
	problems := walkProblems
	unreadable := map[string]bool{}
	var docs []parsedDoc
	seen := map[string]bool{}
	for _, path := range paths {
		seen[path] = true
		data, err := os.ReadFile(path)
		if err != nil {
			unreadable[path] = true
			problems = append(problems, model.Problem{Origin: model.Origin{File: path}, Message: fmt.Sprintf("cannot read: %v", err)})
			continue
		}
		if len(data) == 0 && s.servesFrom(path) {
			// An in-place save truncates the file before it writes it: an empty file that held objects is
			// most likely half written, so its objects stay until it has content again or is deleted.
			unreadable[path] = true
			problems = append(problems, model.Problem{Origin: model.Origin{File: path},
				Message:  "empty: its objects keep serving until it has content again or is deleted",
				Severity: model.SeverityWarning})
			continue
		}
		sum := sha256.Sum256(data)
		cached, ok := s.files[path]
		if !ok || cached.sum != sum {
			cached = cachedFile{sum: sum, docs: parseFile(path, data)}
			s.files[path] = cached
		}
		docs = append(docs, cached.docs...)
	}
	for path := range s.files {
		if !seen[path] {
			delete(s.files, path)
		}
	}

	good, objProblems := s.collect(docs, unreadable)
	problems = append(problems, objProblems...)

	var objs model.Objects
	for _, obj := range good {
		objs.Add(obj)
	}
	if hash := objs.Hash(); s.snap == nil || hash != s.snap.Hash {
		s.version++
		s.snap = model.Build(s.version, objs, s.opts.Model)
		changed = true
	}
	s.good = good
	problems = append(problems, s.snap.Problems...)
	model.SortProblems(problems)
	if !slices.Equal(problems, s.problems) {
		changed = true
	}
	s.problems = problems
	return source.Update{Snapshot: s.snap, Problems: problems}, changed, nil
}

// servesFrom reports whether an object being served came from path.
func (s *Source) servesFrom(path string) bool {
	for _, obj := range s.good {
		if obj.Metadata().Origin.File == path {
			return true
		}
	}
	return false
}

// collect picks the objects to serve from the documents read, in file order: the first of two
// objects with one key wins, and an object missing because it turned bad keeps its last good version.
func (s *Source) collect(docs []parsedDoc, unreadable map[string]bool) (map[model.Key]model.Object, []model.Problem) {
	var problems []model.Problem
	good := map[model.Key]model.Object{}
	badKeys := map[model.Key]bool{}
	// Files with a document that is not even a named object: what such a file held is unknown.
	unknownFiles := map[string]bool{}
	for i := range docs {
		d := &docs[i]
		problems = append(problems, d.problems...)
		switch {
		case d.obj != nil:
			key := d.obj.Metadata().Key()
			if first, dup := good[key]; dup {
				problems = append(problems, model.Problem{Origin: d.origin, Key: key,
					Message: fmt.Sprintf("%s is already defined in %s; ignored", key, first.Metadata().Origin)})
				continue
			}
			good[key] = d.obj
		case d.bad && d.identified():
			badKeys[d.key] = true
		case d.bad:
			unknownFiles[d.origin.File] = true
		}
	}
	for key, last := range s.good {
		if _, ok := good[key]; ok {
			continue
		}
		file := last.Metadata().Origin.File
		if badKeys[key] || unknownFiles[file] || unreadable[file] {
			good[key] = last
			problems = append(problems, model.Problem{Origin: last.Metadata().Origin, Key: key,
				Message: "serving its last good version until its errors are fixed", Severity: model.SeverityWarning})
		}
	}
	return good, problems
}

// list returns the manifest files under the root in path order, and problems with entries that
// could not be looked at.
func (s *Source) list() ([]string, []model.Problem, error) {
	var paths []string
	var problems []model.Problem
	root := walkRoot(s.root)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			problems = append(problems, model.Problem{Origin: model.Origin{File: path}, Message: fmt.Sprintf("cannot read: %v", err)})
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !isManifest(d.Name()) {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			// A dangling link is kept: reading it fails, which keeps its objects' last good versions
			// while a ConfigMap-style swap of the link's target is under way.
			if info, err := os.Stat(path); err == nil && !info.Mode().IsRegular() {
				return nil
			}
		}
		paths = append(paths, path)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	slices.Sort(paths)
	return paths, problems, nil
}

// walkRoot is where to start walking: WalkDir does not follow a root that is a symbolic link, unless
// it ends in a separator.
func walkRoot(root string) string {
	if info, err := os.Lstat(root); err == nil && info.Mode()&fs.ModeSymlink != 0 {
		return root + string(filepath.Separator)
	}
	return root
}

func isManifest(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}
