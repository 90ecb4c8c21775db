package broker

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewID returns a random 128-bit identifier as 32 hex characters.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Prepare fills an empty ID and a zero Time on each message in place, as every
// Publish does before sending.
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
