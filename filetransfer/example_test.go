package filetransfer_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/fs"
	"github.com/go-integration/patterns/filetransfer/memory"
)

func ExampleLayout() {
	l := filetransfer.Layout{Prefix: "exports"}
	d := filetransfer.NewDay(2024, 3, 1)
	fmt.Println(l.DataKey("bookings", d, true))
	fmt.Println(l.DayMarkerKey("bookings", d))
	// Output:
	// exports/bookings/dt=2024-03-01/bookings-2024-03-01.csv.gz
	// exports/bookings/dt=2024-03-01/_SUCCESS
}

// An export job and the API that hands out its files.
func ExampleExporter() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://postgres@127.0.0.1:5432/test")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := fs.New("/var/exports", fs.WithBaseURL("https://api.example.com/dl/"), fs.WithSecret([]byte("a secret of 16 bytes or more")))
	if err != nil {
		log.Fatal(err)
	}
	exporter, err := filetransfer.NewExporter(pool, store, filetransfer.WithGzip(gzip.DefaultCompression), filetransfer.WithParallelism(2))
	if err != nil {
		log.Fatal(err)
	}
	bookings := filetransfer.Dataset{
		Name:          "bookings",
		Query:         "select id, ref, created_at, amount, updated_at from bookings order by id",
		DayColumn:     "created_at",
		UpdatedColumn: "updated_at",
	}
	// In a nightly job: yesterday, and any of the last 7 days missing or changed.
	if _, err := exporter.Catchup(ctx, bookings, time.Now(), 7); err != nil {
		log.Fatal(err)
	}
	links, err := filetransfer.NewLinksHandler(store, filetransfer.WithLinkTTL(24*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /exports/{dataset}", links)
	mux.Handle("/dl/", store.Handler())
	log.Fatal(http.ListenAndServe(":8080", mux))
}

func ExampleNewLinksHandler() {
	ctx := context.Background()
	store, _ := memory.New(memory.WithBaseURL("https://files.example.com/"))
	// What an export leaves for a day: the file and its _SUCCESS marker.
	l := filetransfer.Layout{}
	d := filetransfer.NewDay(2024, 1, 1)
	marker, _ := json.Marshal(filetransfer.DayFile{Dataset: "sales", Day: d, Key: l.DataKey("sales", d, false), Rows: 1, Bytes: 5})
	for key, data := range map[string][]byte{l.DataKey("sales", d, false): []byte("id\n1\n"), l.DayMarkerKey("sales", d): marker} {
		w, _ := store.Create(ctx, key)
		_, _ = w.Write(data)
		_ = w.Commit()
	}

	h, _ := filetransfer.NewLinksHandler(store)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/exports/sales?from=2024-01-01&to=2024-01-02", nil))
	var links filetransfer.Links
	_ = json.Unmarshal(rec.Body.Bytes(), &links)
	fmt.Println(rec.Code, len(links.Files), links.Files[0].Day, links.Files[0].Rows, links.Missing)
	// Output: 200 1 2024-01-01 1 [2024-01-02]
}
