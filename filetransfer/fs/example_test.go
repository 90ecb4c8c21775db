package fs_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/go-integration/patterns/filetransfer/fs"
)

func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "exports")
	defer os.RemoveAll(dir)
	store, err := fs.New(dir, fs.WithBaseURL("https://files.example.com/dl/"), fs.WithSecret([]byte("0123456789abcdef")))
	if err != nil {
		panic(err)
	}
	defer store.Close()
	w, _ := store.Create(ctx, "sales/dt=2024-01-01/sales-2024-01-01.csv")
	_, _ = w.Write([]byte("id\n1\n"))
	_ = w.Commit()
	link, _, _ := store.URL(ctx, "sales/dt=2024-01-01/sales-2024-01-01.csv", time.Hour)

	// Serve the link (mount store.Handler() at /dl/ in a real server).
	rec := httptest.NewRecorder()
	store.Handler().ServeHTTP(rec, httptest.NewRequest("GET", link, nil))
	fmt.Printf("%d %q\n", rec.Code, rec.Body.String())
	rec = httptest.NewRecorder()
	store.Handler().ServeHTTP(rec, httptest.NewRequest("GET", strings.Replace(link, "sig=", "sig=x", 1), nil))
	fmt.Println(rec.Code)
	// Output:
	// 200 "id\n1\n"
	// 403
}
