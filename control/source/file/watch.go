package file

import (
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
)

// watcher watches every folder under a root. Folders, not files, are watched: an editor or a tool
// that writes a new file and renames it over the old one replaces the file a watch would be on, and
// a folder's watch sees creation, writes, renames and removal of the files in it alike.
type watcher struct {
	root string
	w    *fsnotify.Watcher
}

func newWatcher(root string) (*watcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watching config folder: %w", err)
	}
	if err := w.Add(root); err != nil {
		w.Close()
		return nil, fmt.Errorf("watching config folder %s: %w", root, err)
	}
	return &watcher{root: root, w: w}, nil
}

// watchFolders adds a watch on every folder the source reads. Adding one that exists is harmless,
// and re-adding each time also covers a folder removed and created again between two reads.
func (w *watcher) watchFolders(log *slog.Logger) {
	root := walkRoot(w.root)
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if path != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if err := w.w.Add(path); err != nil {
			log.Warn("watching config folder", "folder", path, "error", err)
		}
		return nil
	})
}

// events delivers what happens in the watched folders.
func (w *watcher) events() <-chan fsnotify.Event { return w.w.Events }

func (w *watcher) errors() <-chan error { return w.w.Errors }

func (w *watcher) close() { w.w.Close() }
