package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

const benchID, benchTS = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1700000000

func benchSetup(b *testing.B) (secret string, body []byte) {
	body = make([]byte, 1024)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	return vectors[0].secret, body
}

// BenchmarkBareHMAC is the floor: crypto/hmac SHA-256 over the same bytes that
// Sign and Verify cover (id, timestamp and a 1 KiB body), with a new HMAC per
// message as a naive implementation would.
func BenchmarkBareHMAC(b *testing.B) {
	secret, body := benchSetup(b)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	prefix := []byte(benchID + ".1700000000.")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m := hmac.New(sha256.New, key)
		m.Write(prefix)
		m.Write(body)
		_ = m.Sum(nil)
	}
}

// BenchmarkBareHMACReused is the floor with the HMAC reused (Reset) between messages.
func BenchmarkBareHMACReused(b *testing.B) {
	secret, body := benchSetup(b)
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	prefix := []byte(benchID + ".1700000000.")
	m := hmac.New(sha256.New, key)
	var out [32]byte
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m.Reset()
		m.Write(prefix)
		m.Write(body)
		_ = m.Sum(out[:0])
	}
}

func BenchmarkSign(b *testing.B) {
	secret, body := benchSetup(b)
	s, _ := NewSigner(secret)
	ts := time.Unix(benchTS, 0)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_, _ = s.Sign(benchID, ts, body)
	}
}

func BenchmarkAppendSignature(b *testing.B) {
	secret, body := benchSetup(b)
	s, _ := NewSigner(secret)
	buf := make([]byte, 0, 64)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = s.AppendSignature(buf[:0], benchID, benchTS, body)
	}
}

func BenchmarkVerify(b *testing.B) {
	secret, body := benchSetup(b)
	s, _ := NewSigner(secret)
	v, _ := NewVerifier([]string{secret}, WithClock(fixedClock(benchTS)))
	h := make(map[string][]string)
	s.SignHeader(h, benchID, time.Unix(benchTS, 0), body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyJunkEntries: a header of 5000 junk entries before the good
// one costs a bounded scan (WithMaxSignatures), not 5000 comparisons.
func BenchmarkVerifyJunkEntries(b *testing.B) {
	secret, body := benchSetup(b)
	s, _ := NewSigner(secret)
	v, _ := NewVerifier([]string{secret}, WithClock(fixedClock(benchTS)))
	h := make(map[string][]string)
	s.SignHeader(h, benchID, time.Unix(benchTS, 0), body)
	h[HeaderSignature] = []string{strings.Repeat("v1,AAAA ", 5000) + h[HeaderSignature][0]}
	b.ReportAllocs()
	for b.Loop() {
		_ = v.Verify(h, body)
	}
}

// BenchmarkVerifyRotation: two keys, the signature made with the second.
func BenchmarkVerifyRotation(b *testing.B) {
	secret, body := benchSetup(b)
	s, _ := NewSigner(secret)
	v, _ := NewVerifier([]string{NewSecret(), secret}, WithClock(fixedClock(benchTS)))
	h := make(map[string][]string)
	s.SignHeader(h, benchID, time.Unix(benchTS, 0), body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(h, body); err != nil {
			b.Fatal(err)
		}
	}
}
