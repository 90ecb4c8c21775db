// Package ids is the module's one source of random identifiers: message IDs,
// idempotency keys and the owner tokens of claim stores.
package ids

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

func random128() [16]byte {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24)
	return b
}

// Hex returns 128 random bits as 32 lowercase hex characters.
func Hex() string {
	b := random128()
	return hex.EncodeToString(b[:])
}

// UUID returns a random (version 4) UUID in its canonical text form.
func UUID() string {
	b := random128()
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Base32 returns prefix followed by 128 random bits in lowercase base32 (26
// characters), the form Standard Webhooks uses for message IDs ("msg_...").
func Base32(prefix string) string {
	b := random128()
	return prefix + strings.ToLower(b32.EncodeToString(b[:]))
}
