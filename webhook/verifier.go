package webhook

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Verify, one per check; test them with errors.Is. The
// returned error wraps one of them and says more (which header, how far off).
var (
	ErrMissingHeader       = errors.New("webhook: missing header")
	ErrInvalidTimestamp    = errors.New("webhook: invalid timestamp")
	ErrTimestampTooOld     = errors.New("webhook: timestamp too old")
	ErrTimestampTooNew     = errors.New("webhook: timestamp too new")
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
)

// Defaults of a Verifier.
const (
	DefaultTolerance     = 5 * time.Minute
	DefaultMaxSignatures = 64
)

func errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{base}, args...)...)
}

// Verifier checks the signature and timestamp of webhook requests against a
// set of keys: "whsec_" secrets check "v1" entries, "whpk_" public keys (and
// the public half of "whsk_" private keys) check "v1a" entries. A request is
// valid when any entry matches any key. A Verifier is safe for concurrent use.
type Verifier struct {
	keys parsedKeys
	verifierConfig
}

type verifierConfig struct {
	common
	tolerance time.Duration
	maxSigs   int
}

// WithTolerance sets how far a timestamp may be from the clock, in either
// direction. Default DefaultTolerance (five minutes). A negative value
// disables the check (only for tests of archived requests).
func WithTolerance(d time.Duration) VerifierOption {
	return verifierOpt(func(c *verifierConfig) error { c.tolerance = d; return nil })
}

// WithMaxSignatures bounds how many entries of a webhook-signature header are
// examined, so a header with thousands of entries costs little. Positive;
// default DefaultMaxSignatures.
func WithMaxSignatures(n int) VerifierOption {
	return verifierOpt(func(c *verifierConfig) error {
		if n <= 0 {
			return optionErrorf("webhook: WithMaxSignatures(%d): must be positive", n)
		}
		c.maxSigs = n
		return nil
	})
}

// NewVerifier returns a Verifier for the given secrets and keys. A secret it
// cannot parse gives an error wrapping ErrInvalidSecret; an option it cannot
// accept one wrapping ErrInvalidOption. Options: WithTolerance,
// WithMaxSignatures, WithClock.
func NewVerifier(secrets []string, opts ...VerifierOption) (*Verifier, error) {
	keys, err := parseKeys(secrets)
	if err != nil {
		return nil, err
	}
	v := &Verifier{keys: keys, verifierConfig: verifierConfig{common: defaultCommon(), tolerance: DefaultTolerance, maxSigs: DefaultMaxSignatures}}
	if err := applyOptions(opts, func(o VerifierOption) error { return o.applyVerifier(&v.verifierConfig) }); err != nil {
		return nil, err
	}
	return v, nil
}

// headerValue returns the first value of a header. Headers built by net/http
// have canonical keys; for maps built elsewhere (serverless events, tests with
// "webhook-id" keys) it falls back to a case-insensitive search.
func headerValue(h http.Header, canonical string) string {
	if vs := h[canonical]; len(vs) > 0 {
		return vs[0]
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, canonical) {
			return vs[0]
		}
	}
	return ""
}

// Verify checks the Standard Webhooks headers of h against the raw body. It
// returns nil when the timestamp is within tolerance and a signature matches;
// otherwise an error wrapping ErrMissingHeader, ErrInvalidMessageID (a
// webhook-id containing '.'), ErrInvalidTimestamp, ErrTimestampTooOld,
// ErrTimestampTooNew or ErrNoMatchingSignature.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	return v.VerifyValues(headerValue(h, HeaderID), headerValue(h, HeaderTimestamp), headerValue(h, HeaderSignature), body)
}

// VerifyValues is Verify with the three header values given directly.
func (v *Verifier) VerifyValues(id, timestamp, signatures string, body []byte) error {
	switch {
	case id == "":
		return errorf(ErrMissingHeader, "webhook-id")
	case timestamp == "":
		return errorf(ErrMissingHeader, "webhook-timestamp")
	case signatures == "":
		return errorf(ErrMissingHeader, "webhook-signature")
	}
	if err := ValidateMessageID(id); err != nil {
		return fmt.Errorf("webhook-id: %w", err)
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil || ts < 0 {
		return errorf(ErrInvalidTimestamp, "%q is not Unix seconds", truncate(timestamp, 32))
	}
	if v.tolerance >= 0 {
		now := v.now().Unix()
		tol := int64(v.tolerance / time.Second)
		if now-ts > tol {
			return errorf(ErrTimestampTooOld, "%ds behind the clock, tolerance %v", now-ts, v.tolerance)
		}
		if ts-now > tol {
			return errorf(ErrTimestampTooNew, "%ds ahead of the clock, tolerance %v", ts-now, v.tolerance)
		}
	}

	// Expected v1 signatures, base64-encoded, computed once per key on first need.
	var encStack [2][44]byte
	var encs [][44]byte
	var v1aMsg []byte
	examined, v1, v1a := 0, 0, 0
	rest := signatures
	for rest != "" {
		var entry string
		entry, rest, _ = strings.Cut(rest, " ")
		if entry == "" {
			continue
		}
		if examined == v.maxSigs {
			return errorf(ErrNoMatchingSignature, "none of the first %d entries matched (more were ignored)", v.maxSigs)
		}
		examined++
		version, sig, ok := strings.Cut(entry, ",")
		if !ok {
			continue
		}
		switch version {
		case "v1":
			v1++
			if len(sig) != 44 || len(v.keys.hmacs) == 0 {
				continue
			}
			if encs == nil {
				encs = encStack[:0]
				var sum [sha256.Size]byte
				for _, k := range v.keys.hmacs {
					mac(k, &sum, id, timestamp, body)
					var e [44]byte
					base64.StdEncoding.Encode(e[:], sum[:])
					encs = append(encs, e)
				}
			}
			for i := range encs {
				if equalString(encs[i][:], sig) {
					return nil
				}
			}
		case "v1a":
			v1a++
			if len(v.keys.pubs) == 0 || len(sig) != 88 {
				continue
			}
			raw, err := base64.StdEncoding.DecodeString(sig)
			if err != nil {
				continue
			}
			if v1aMsg == nil {
				v1aMsg = make([]byte, 0, len(id)+len(timestamp)+2+len(body))
				v1aMsg = append(v1aMsg, id...)
				v1aMsg = append(v1aMsg, '.')
				v1aMsg = append(v1aMsg, timestamp...)
				v1aMsg = append(v1aMsg, '.')
				v1aMsg = append(v1aMsg, body...)
			}
			for _, pub := range v.keys.pubs {
				if ed25519.Verify(pub, v1aMsg, raw) {
					return nil
				}
			}
		}
	}
	if v1+v1a == 0 {
		return errorf(ErrNoMatchingSignature, "no v1 or v1a entry among %d", examined)
	}
	return errorf(ErrNoMatchingSignature, "%d v1 and %d v1a entries checked", v1, v1a)
}

// equalString compares a and b in time that depends only on their lengths.
func equalString(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var d byte
	for i := 0; i < len(a); i++ {
		d |= a[i] ^ b[i]
	}
	return subtle.ConstantTimeByteEq(d, 0) == 1
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
