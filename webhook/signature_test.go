package webhook

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The published Standard Webhooks test vectors.
var vectors = []struct {
	secret, id string
	ts         int64
	body, sig  string
}{
	{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
		`{"test": 2432232314}`, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="},
	{"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553,
		`{"email":"test@example.com","username":"test_user"}`, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="},
}

func fixedClock(unix int64) func() time.Time { return func() time.Time { return time.Unix(unix, 0) } }

func TestSpecVectors(t *testing.T) {
	for _, v := range vectors {
		s, err := NewSigner(v.secret)
		if err != nil {
			t.Fatal(err)
		}
		if got := mustSign(t, s, v.id, time.Unix(v.ts, 0), []byte(v.body)); got != v.sig {
			t.Errorf("Sign(%s) = %s, want %s", v.id, got, v.sig)
		}
		ver, err := NewVerifier([]string{v.secret}, WithClock(fixedClock(v.ts)))
		if err != nil {
			t.Fatal(err)
		}
		if err := ver.VerifyValues(v.id, strconv.FormatInt(v.ts, 10), v.sig, []byte(v.body)); err != nil {
			t.Errorf("Verify(%s): %v", v.id, err)
		}
	}
}

func signedHeader(t testing.TB, secret, id string, ts int64, body []byte) http.Header {
	t.Helper()
	s, err := NewSigner(secret)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	s.SignHeader(h, id, time.Unix(ts, 0), body)
	return h
}

func TestVerifyRejects(t *testing.T) {
	const now = 1700000000
	secret := NewSecret()
	body := []byte(`{"type":"invoice.paid","amount":42}`)
	v, err := NewVerifier([]string{secret}, WithClock(fixedClock(now)))
	if err != nil {
		t.Fatal(err)
	}
	good := signedHeader(t, secret, "msg_1", now, body)
	if err := v.Verify(good, body); err != nil {
		t.Fatalf("valid request rejected: %v", err)
	}
	with := func(name, value string) http.Header {
		h := good.Clone()
		if value == "" {
			h.Del(name)
		} else {
			h.Set(name, value)
		}
		return h
	}
	sig := good.Get(HeaderSignature)
	cases := []struct {
		name string
		h    http.Header
		body []byte
		want error
	}{
		{"tampered body", good, []byte(`{"type":"invoice.paid","amount":43}`), ErrNoMatchingSignature},
		{"empty body", good, nil, ErrNoMatchingSignature},
		{"tampered id", with(HeaderID, "msg_2"), body, ErrNoMatchingSignature},
		{"tampered timestamp", with(HeaderTimestamp, strconv.Itoa(now+1)), body, ErrNoMatchingSignature},
		{"tampered signature", with(HeaderSignature, sig[:10]+flip(sig[10])+sig[11:]), body, ErrNoMatchingSignature},
		{"missing id", with(HeaderID, ""), body, ErrMissingHeader},
		{"missing timestamp", with(HeaderTimestamp, ""), body, ErrMissingHeader},
		{"missing signature", with(HeaderSignature, ""), body, ErrMissingHeader},
		{"timestamp not a number", with(HeaderTimestamp, "yesterday"), body, ErrInvalidTimestamp},
		{"timestamp float", with(HeaderTimestamp, "1700000000.5"), body, ErrInvalidTimestamp},
		{"timestamp negative", with(HeaderTimestamp, "-5"), body, ErrInvalidTimestamp},
		{"timestamp overflow", with(HeaderTimestamp, "99999999999999999999999"), body, ErrInvalidTimestamp},
		{"too old", signedHeader(t, secret, "msg_1", now-301, body), body, ErrTimestampTooOld},
		{"too new", signedHeader(t, secret, "msg_1", now+301, body), body, ErrTimestampTooNew},
		{"other secret", signedHeader(t, NewSecret(), "msg_1", now, body), body, ErrNoMatchingSignature},
		{"v1, empty", with(HeaderSignature, "v1,"), body, ErrNoMatchingSignature},
		{"no comma", with(HeaderSignature, strings.Replace(sig, ",", "", 1)), body, ErrNoMatchingSignature},
		{"unknown version only", with(HeaderSignature, "v2,"+sig[3:]), body, ErrNoMatchingSignature},
		{"bad base64", with(HeaderSignature, "v1,!!!!"+sig[7:]), body, ErrNoMatchingSignature},
		{"only spaces", with(HeaderSignature, "    "), body, ErrNoMatchingSignature},
		{"thousands of entries, good one last", with(HeaderSignature, strings.Repeat("v1,AAAA ", 5000)+sig), body, ErrNoMatchingSignature},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := v.Verify(c.h, c.body)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	// Within tolerance on both sides is accepted.
	for _, d := range []int64{-300, 300} {
		if err := v.Verify(signedHeader(t, secret, "msg_1", now+d, body), body); err != nil {
			t.Errorf("timestamp %+ds rejected: %v", d, err)
		}
	}
}

func flip(c byte) string {
	if c == 'A' {
		return "B"
	}
	return "A"
}

func TestVerifyAnyOfSeveral(t *testing.T) {
	const now = 1700000000
	oldS, newS := NewSecret(), NewSecret()
	body := []byte("hello")
	// Rotation: the sender signs with both; receivers that know either accept.
	h := signedHeader(t, oldS, "msg_r", now, body)
	s, _ := NewSigner(oldS, newS)
	h.Set(HeaderSignature, mustSign(t, s, "msg_r", time.Unix(now, 0), body))
	if n := len(strings.Fields(h.Get(HeaderSignature))); n != 2 {
		t.Fatalf("want 2 signatures, got %d", n)
	}
	for _, secret := range []string{oldS, newS} {
		v, _ := NewVerifier([]string{secret}, WithClock(fixedClock(now)))
		if err := v.Verify(h, body); err != nil {
			t.Errorf("verify with one of the rotated secrets: %v", err)
		}
	}
	// A verifier with several keys accepts a signature from any of them, with
	// unknown versions and junk mixed in.
	v, _ := NewVerifier([]string{NewSecret(), newS}, WithClock(fixedClock(now)))
	one, _ := NewSigner(newS)
	hdr := "v2,abc v1, junk " + mustSign(t, one, "msg_r", time.Unix(now, 0), body)
	if err := v.VerifyValues("msg_r", strconv.Itoa(now), hdr, body); err != nil {
		t.Errorf("mixed list: %v", err)
	}
}

func TestEd25519(t *testing.T) {
	const now = 1700000000
	priv, pub := NewKeyPair()
	if !strings.HasPrefix(priv, "whsk_") || !strings.HasPrefix(pub, "whpk_") {
		t.Fatalf("key prefixes: %s %s", priv, pub)
	}
	hsec := NewSecret()
	s, err := NewSigner(hsec, priv)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"a":1}`)
	sig := mustSign(t, s, "msg_e", time.Unix(now, 0), body)
	if !strings.Contains(sig, " v1a,") {
		t.Fatalf("no v1a entry in %q", sig)
	}
	v, err := NewVerifier([]string{pub}, WithClock(fixedClock(now)))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyValues("msg_e", strconv.Itoa(now), sig, body); err != nil {
		t.Fatalf("v1a verify: %v", err)
	}
	if err := v.VerifyValues("msg_e", strconv.Itoa(now), sig, []byte(`{"a":2}`)); !errors.Is(err, ErrNoMatchingSignature) {
		t.Fatalf("tampered v1a body: %v", err)
	}
	_, otherPub := NewKeyPair()
	v2, _ := NewVerifier([]string{otherPub}, WithClock(fixedClock(now)))
	if err := v2.VerifyValues("msg_e", strconv.Itoa(now), sig, body); !errors.Is(err, ErrNoMatchingSignature) {
		t.Fatalf("other public key: %v", err)
	}
	// The 64-byte form of the private key signs the same.
	seed, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(priv, "whsk_"))
	if len(seed) != ed25519.SeedSize {
		t.Fatalf("private key holds %d bytes, want the %d-byte seed", len(seed), ed25519.SeedSize)
	}
	long, err := NewSigner("whsk_" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(seed)))
	if err != nil {
		t.Fatal(err)
	}
	if got := mustSign(t, long, "msg_e", time.Unix(now, 0), body); !strings.Contains(sig, got) {
		t.Fatalf("64-byte key signs %q, seed signs %q", got, sig)
	}
	if _, err := NewSigner(pub); !errors.Is(err, ErrInvalidSecret) {
		t.Fatalf("signer from a public key: %v", err)
	}
}

func TestSecrets(t *testing.T) {
	for _, n := range []int{24, 32, 64} {
		s, err := NewSecretSize(n)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil || len(raw) != n {
			t.Fatalf("NewSecretSize(%d) = %s: %d bytes, %v", n, s, len(raw), err)
		}
	}
	if a, b := NewSecret(), NewSecret(); a == b {
		t.Fatal("two secrets are equal")
	}
	for _, n := range []int{0, 23, 65} {
		if _, err := NewSecretSize(n); !errors.Is(err, ErrInvalidSecret) {
			t.Errorf("NewSecretSize(%d): %v", n, err)
		}
	}
	short := "whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, bad := range []string{"whsec_!!", short, "whpk_AAAA", "whsk_AAAA"} {
		if _, err := NewVerifier([]string{bad}); !errors.Is(err, ErrInvalidSecret) {
			t.Errorf("NewVerifier(%q): %v", bad, err)
		}
	}
	if _, err := NewVerifier(nil); !errors.Is(err, ErrInvalidSecret) {
		t.Errorf("NewVerifier(nil): %v", err)
	}
}

func TestVerifyNonCanonicalHeaderKeys(t *testing.T) {
	v := vectors[0]
	ver, _ := NewVerifier([]string{v.secret}, WithClock(fixedClock(v.ts)))
	h := http.Header{
		"webhook-id":        {v.id},
		"WEBHOOK-TIMESTAMP": {strconv.FormatInt(v.ts, 10)},
		"webhook-signature": {v.sig},
	}
	if err := ver.Verify(h, []byte(v.body)); err != nil {
		t.Fatalf("lower-case header keys: %v", err)
	}
}

// Verify allocates at most twice per call once its HMAC state is pooled. CI
// runs every test under -race, where sync.Pool drops a quarter of what is put
// back; so the calls that had to build a new HMAC state are left out, and the
// median of the others is what counts (robust to a stray allocation by another
// goroutine).
func TestVerifyAllocs(t *testing.T) {
	secret := NewSecret()
	body := make([]byte, 1024)
	h := signedHeader(t, secret, "msg_alloc", 1700000000, body)
	v, _ := NewVerifier([]string{secret}, WithClock(fixedClock(1700000000)))
	k := v.keys.hmacs[0]
	newState, misses := k.pool.New, 0
	k.pool.New = func() any { misses++; return newState() }
	if err := v.Verify(h, body); err != nil { // fill the pool
		t.Fatal(err)
	}
	var counts []uint64
	var before, after runtime.MemStats
	for range 200 {
		m := misses
		runtime.ReadMemStats(&before)
		err := v.Verify(h, body)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if misses == m {
			counts = append(counts, after.Mallocs-before.Mallocs)
		}
	}
	if len(counts) < 50 {
		t.Fatalf("only %d of 200 calls found a pooled HMAC state", len(counts))
	}
	slices.Sort(counts)
	if med := counts[len(counts)/2]; med > 2 {
		t.Fatalf("Verify allocates %d times (median of %d calls), want at most 2", med, len(counts))
	}
}

func FuzzVerifyHeaders(f *testing.F) {
	secret := vectors[0].secret
	f.Add(vectors[0].id, strconv.FormatInt(vectors[0].ts, 10), vectors[0].sig, []byte(vectors[0].body))
	f.Add("id", "1614265330", "v1,", []byte("x"))
	f.Add("id", "1614265330", "v1a,AAAA v1,AAAA  v2", []byte("x"))
	f.Add("", "-1", ",,,, ", []byte(nil))
	v, err := NewVerifier([]string{secret}, WithClock(fixedClock(vectors[0].ts)))
	if err != nil {
		f.Fatal(err)
	}
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	f.Fuzz(func(t *testing.T, id, ts, sigs string, body []byte) {
		err := v.VerifyValues(id, ts, sigs, body)
		if err == nil {
			// Accepted: some entry must really be the HMAC of this content.
			m := hmac.New(sha256.New, key)
			m.Write([]byte(id + "." + ts + "."))
			m.Write(body)
			want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
			found := false
			for _, e := range strings.Split(sigs, " ") {
				found = found || e == want
			}
			if !found {
				t.Fatalf("accepted %q %q %q without a matching entry", id, ts, sigs)
			}
			return
		}
		for _, known := range []error{ErrMissingHeader, ErrInvalidTimestamp, ErrTimestampTooOld, ErrTimestampTooNew, ErrNoMatchingSignature} {
			if errors.Is(err, known) {
				return
			}
		}
		t.Fatalf("unclassified error %v", err)
	})
}

// mustSign is Sign for IDs known to be valid.
func mustSign(t testing.TB, s *Signer, id string, ts time.Time, body []byte) string {
	t.Helper()
	sig, err := s.Sign(id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}
