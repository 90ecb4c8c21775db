package fs_test

import (
	"context"
	iofs "io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	"github.com/go-integration/patterns/filetransfer/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		CheckedLinks: true,
		New: func(t *testing.T) filetransfer.Store {
			var h http.Handler
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
			t.Cleanup(srv.Close)
			s, err := fs.New(fs.Config{Dir: t.TempDir(), BaseURL: srv.URL + "/dl/", Secret: []byte("0123456789abcdef0123")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			h = s.Handler()
			return s
		},
	})
}

func TestNoTemporaryFilesLeft(t *testing.T) {
	dir := t.TempDir()
	s, err := fs.New(fs.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	w1, _ := s.Create(ctx, "a/dt=2024-01-01/a.csv")
	_, _ = w1.Write([]byte("aborted"))
	_ = w1.Abort()
	w2, _ := s.Create(ctx, "a/dt=2024-01-01/a.csv")
	_, _ = w2.Write([]byte("cancelled"))
	cancel()
	if err := w2.Commit(); err == nil {
		t.Fatal("Commit after cancel succeeded")
	}
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d iofs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Fatalf("files left after abort and cancel: %v", files)
	}
}

// A symbolic link inside the folder cannot lead a key outside it.
func TestSymlinkCannotEscape(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.csv"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Skip("no symlinks:", err)
	}
	s, err := fs.New(fs.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Open(context.Background(), "link/secret.csv"); err == nil {
		t.Fatal("read a file outside the folder through a symbolic link")
	}
	if err := filetransfer.Put(context.Background(), s, "link/new.csv", []byte("x")); err == nil {
		t.Fatal("wrote outside the folder through a symbolic link")
	}
	if _, err := os.Stat(filepath.Join(outside, "new.csv")); err == nil {
		t.Fatal("file created outside the folder")
	}
}
