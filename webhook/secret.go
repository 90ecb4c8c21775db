package webhook

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Prefixes of the three kinds of key in their string form.
const (
	SecretPrefix     = "whsec_" // symmetric HMAC-SHA256 secret ("v1" signatures)
	PrivateKeyPrefix = "whsk_"  // ed25519 private key ("v1a" signatures)
	PublicKeyPrefix  = "whpk_"  // ed25519 public key (verifies "v1a" signatures)
)

// Limits on the size of a symmetric secret, from the Standard Webhooks specification.
const (
	MinSecretBytes     = 24
	MaxSecretBytes     = 64
	DefaultSecretBytes = 32
)

// ErrInvalidSecret reports a secret or key that cannot be parsed: wrong prefix,
// bad base64 or wrong length.
var ErrInvalidSecret = errors.New("webhook: invalid secret")

// NewSecret returns a fresh random "whsec_" secret of DefaultSecretBytes bytes.
func NewSecret() string {
	s, _ := NewSecretSize(DefaultSecretBytes)
	return s
}

// NewSecretSize returns a fresh random "whsec_" secret of n bytes, where n is
// between MinSecretBytes and MaxSecretBytes.
func NewSecretSize(n int) (string, error) {
	if n < MinSecretBytes || n > MaxSecretBytes {
		return "", fmt.Errorf("%w: size %d outside [%d, %d] bytes", ErrInvalidSecret, n, MinSecretBytes, MaxSecretBytes)
	}
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// NewKeyPair returns a fresh ed25519 key pair for "v1a" signatures: a private
// key "whsk_<base64 of the 32-byte seed>" for the Signer (the form the
// Standard Webhooks reference libraries read; a 64-byte private key is
// accepted too) and a public key "whpk_<base64 of the 32-byte key>" for
// Verifiers.
func NewKeyPair() (private, public string) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	return PrivateKeyPrefix + base64.StdEncoding.EncodeToString(priv.Seed()),
		PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// macState is a reusable HMAC with scratch space, so signing and verifying
// allocate nothing in the steady state.
type macState struct {
	h   hash.Hash
	buf [256]byte
	sum [sha256.Size]byte
}

// hmacKey is one parsed "whsec_" secret with a pool of HMAC states.
type hmacKey struct {
	pool sync.Pool
}

func newHMACKey(raw []byte) *hmacKey {
	k := &hmacKey{}
	key := append([]byte(nil), raw...)
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key)} }
	return k
}

// mac computes HMAC-SHA256(id "." ts "." body) into out.
func mac[T string | []byte](k *hmacKey, out *[sha256.Size]byte, id string, ts T, body []byte) {
	st := k.pool.Get().(*macState)
	st.h.Reset()
	b := append(st.buf[:0], id...)
	b = append(b, '.')
	b = append(b, ts...)
	b = append(b, '.')
	st.h.Write(b)
	st.h.Write(body)
	copy(out[:], st.h.Sum(st.sum[:0]))
	k.pool.Put(st)
}

// parsedKeys is the result of parsing a list of secrets and keys.
type parsedKeys struct {
	hmacs []*hmacKey
	privs []ed25519.PrivateKey
	pubs  []ed25519.PublicKey
}

// parseKey parses one secret or key. A string without a known prefix is read
// as the base64 of a symmetric secret, as other Standard Webhooks libraries do.
func (p *parsedKeys) add(s string) error {
	s = strings.TrimSpace(s)
	switch {
	case strings.HasPrefix(s, PrivateKeyPrefix):
		raw, err := base64.StdEncoding.DecodeString(s[len(PrivateKeyPrefix):])
		if err != nil {
			return fmt.Errorf("%w: %s key: %v", ErrInvalidSecret, PrivateKeyPrefix, err)
		}
		var priv ed25519.PrivateKey
		switch len(raw) {
		case ed25519.PrivateKeySize:
			priv = ed25519.PrivateKey(raw)
		case ed25519.SeedSize:
			priv = ed25519.NewKeyFromSeed(raw)
		default:
			return fmt.Errorf("%w: %s key of %d bytes, want %d or %d", ErrInvalidSecret, PrivateKeyPrefix, len(raw), ed25519.PrivateKeySize, ed25519.SeedSize)
		}
		p.privs = append(p.privs, priv)
		p.pubs = append(p.pubs, priv.Public().(ed25519.PublicKey))
	case strings.HasPrefix(s, PublicKeyPrefix):
		raw, err := base64.StdEncoding.DecodeString(s[len(PublicKeyPrefix):])
		if err != nil {
			return fmt.Errorf("%w: %s key: %v", ErrInvalidSecret, PublicKeyPrefix, err)
		}
		if len(raw) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: %s key of %d bytes, want %d", ErrInvalidSecret, PublicKeyPrefix, len(raw), ed25519.PublicKeySize)
		}
		p.pubs = append(p.pubs, ed25519.PublicKey(raw))
	default:
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, SecretPrefix))
		if err != nil {
			return fmt.Errorf("%w: %s secret: %v", ErrInvalidSecret, SecretPrefix, err)
		}
		if len(raw) < MinSecretBytes || len(raw) > MaxSecretBytes {
			return fmt.Errorf("%w: %s secret of %d bytes, want %d to %d", ErrInvalidSecret, SecretPrefix, len(raw), MinSecretBytes, MaxSecretBytes)
		}
		p.hmacs = append(p.hmacs, newHMACKey(raw))
	}
	return nil
}

func parseKeys(secrets []string) (parsedKeys, error) {
	var p parsedKeys
	if len(secrets) == 0 {
		return p, fmt.Errorf("%w: no secret given", ErrInvalidSecret)
	}
	for i, s := range secrets {
		if err := p.add(s); err != nil {
			return parsedKeys{}, fmt.Errorf("secret %d: %w", i, err)
		}
	}
	return p, nil
}
