package broker

import (
	"time"

	"github.com/go-integration/patterns/internal/ids"
)

// NewID returns a random 128-bit identifier as 32 hex characters, the ID
// Publish gives a message that has none.
func NewID() string { return ids.Hex() }

// Prepare fills an empty ID and a zero Time on each message in place, as every
// Publish does before sending. It is for adapter authors; users call Publish.
func Prepare(msgs []Message, now time.Time) {
	for i := range msgs {
		if msgs[i].ID == "" {
			msgs[i].ID = NewID()
		}
		if msgs[i].Time.IsZero() {
			msgs[i].Time = now
		}
	}
}
