package memory_test

import (
	"context"
	"fmt"

	"github.com/go-integration/patterns/filetransfer"
	"github.com/go-integration/patterns/filetransfer/memory"
)

func Example() {
	ctx := context.Background()
	store, _ := memory.New(memory.Config{})
	_ = filetransfer.Put(ctx, store, "sales/dt=2024-01-01/sales-2024-01-01.csv", []byte("id\n1\n"))
	b, _ := filetransfer.ReadAll(ctx, store, "sales/dt=2024-01-01/sales-2024-01-01.csv")
	fmt.Printf("%q %v\n", b, store.Keys())
	// Output: "id\n1\n" [sales/dt=2024-01-01/sales-2024-01-01.csv]
}
