package fs_test

import (
	"context"
	"errors"
	iofs "io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	"github.com/go-integration/patterns/filetransfer/internal/storeutil"
	"github.com/go-integration/patterns/filetransfer/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Features: storetest.Features{CheckedLinks: true, Check: true},
		New: func(t *testing.T) filetransfer.Store {
			var h http.Handler
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
			t.Cleanup(srv.Close)
			s, err := fs.New(t.TempDir(), fs.WithBaseURL(srv.URL+"/dl/"), fs.WithSecret([]byte("0123456789abcdef0123")))
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
	s, err := fs.New(dir)
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
	s, err := fs.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Open(context.Background(), "link/secret.csv"); err == nil {
		t.Fatal("read a file outside the folder through a symbolic link")
	}
	if err := storeutil.Put(context.Background(), s.Create, "link/new.csv", []byte("x")); err == nil {
		t.Fatal("wrote outside the folder through a symbolic link")
	}
	if _, err := os.Stat(filepath.Join(outside, "new.csv")); err == nil {
		t.Fatal("file created outside the folder")
	}
}

func TestBadOptions(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("0123456789abcdef")
	for name, opts := range map[string][]fs.Option{
		"nil option":         {nil},
		"empty URL":          {fs.WithBaseURL(""), fs.WithSecret(secret)},
		"relative URL":       {fs.WithBaseURL("/dl/"), fs.WithSecret(secret)},
		"short secret":       {fs.WithBaseURL("https://x/dl/"), fs.WithSecret([]byte("short"))},
		"URL without secret": {fs.WithBaseURL("https://x/dl/")},
		"secret without URL": {fs.WithSecret(secret)},
	} {
		s, err := fs.New(dir, opts...)
		if !errors.Is(err, filetransfer.ErrInvalidOption) {
			t.Errorf("%s: New = %v, want ErrInvalidOption", name, err)
		}
		if s != nil {
			s.Close()
		}
	}
	s, err := fs.New(dir, fs.WithBaseURL("https://x/dl/"), fs.WithSecret(secret), fs.WithoutSync())
	if err != nil {
		t.Fatalf("good options: %v", err)
	}
	s.Close()
}

// Links of a store without WithBaseURL and WithSecret: URL fails, Handler
// refuses everything.
func TestNoLinks(t *testing.T) {
	s, err := fs.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.URL(context.Background(), "a.csv", time.Minute); err == nil {
		t.Fatal("URL without links configured succeeded")
	}
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/dl/a.csv", nil))
	if rec.Code != http.StatusForbidden {
		t.Fatalf("Handler without links: %d, want 403", rec.Code)
	}
}
