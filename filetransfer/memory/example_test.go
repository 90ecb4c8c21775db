package memory_test

import (
	"context"
	"fmt"
	"io"

	"github.com/go-integration/patterns/filetransfer/memory"
)

func Example() {
	ctx := context.Background()
	store, _ := memory.New()
	w, _ := store.Create(ctx, "sales/dt=2024-01-01/sales-2024-01-01.csv")
	_, _ = w.Write([]byte("id\n1\n"))
	_ = w.Commit()
	r, _ := store.Open(ctx, "sales/dt=2024-01-01/sales-2024-01-01.csv")
	b, _ := io.ReadAll(r)
	fmt.Printf("%q %v\n", b, store.Keys())
	// Output: "id\n1\n" [sales/dt=2024-01-01/sales-2024-01-01.csv]
}
