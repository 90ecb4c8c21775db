// Command bookings tells the story of a rental-booking platform with the
// patterns of this module. It runs on embedded defaults: go run ./examples/bookings
package main

import (
	"context"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bookings:", err)
		os.Exit(1)
	}
}

// run runs every step of the tour, printing as it goes, and a summary at the end.
func run(ctx context.Context, w io.Writer) error {
	t := &tour{w: w}
	t.step("Events on a topic exchange (memory broker)", routedEvents)
	return t.summary()
}
