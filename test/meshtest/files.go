package meshtest

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteAtomically replaces dir/name the way editors and kubectl-style tools do: the content goes to a
// temporary file in the same folder, renamed over the old one, so a reader never sees half a file. The
// temporary name starts with a dot, which the file source skips.
func WriteAtomically(t testing.TB, dir, name, content string) {
	t.Helper()
	f, err := os.CreateTemp(dir, "."+name+"-*.tmp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// WriteInPlace overwrites dir/name in place: truncated, then written, as `echo > file` or an editor that
// keeps the inode does.
func WriteInPlace(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
