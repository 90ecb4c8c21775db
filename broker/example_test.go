package broker_test

import (
	"fmt"

	"github.com/go-integration/patterns/broker"
)

func ExampleMatch() {
	for _, key := range []string{"rentals.france.nevache", "rentals.france", "rentals", "bookings.france.nevache"} {
		fmt.Printf("%-24s rentals.france.*=%-5v rentals.#=%v\n", key,
			broker.Match("rentals.france.*", key), broker.Match("rentals.#", key))
	}
	// Output:
	// rentals.france.nevache   rentals.france.*=true  rentals.#=true
	// rentals.france           rentals.france.*=false rentals.#=true
	// rentals                  rentals.france.*=false rentals.#=true
	// bookings.france.nevache  rentals.france.*=false rentals.#=false
}

func ExampleCompilePattern() {
	_, err := broker.CompilePattern("rentals.fr*")
	fmt.Println(err)
	// Output:
	// broker: invalid routing-key pattern: "rentals.fr*": word 2 "fr*" mixes a wildcard with other characters; use a whole word "*" or "#"
}
