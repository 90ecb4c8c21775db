package webhook

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidMessageID reports a message ID (webhook-id) that is empty or
// contains '.'. The signed content is "<id>.<timestamp>.<body>", so a '.' in
// the ID would make it ambiguous: a signature for ID "x.1700000300", timestamp
// 1700000000 and body B would also be valid for ID "x", timestamp 1700000300
// and body "1700000000.B". The Standard Webhooks specification forbids it.
var ErrInvalidMessageID = errors.New("webhook: invalid message ID")

// ValidateMessageID returns nil when id can be a message ID (webhook-id), and
// an error wrapping ErrInvalidMessageID when it is empty or contains '.'.
// Signer, Verifier, Sender and the stores check IDs with it.
func ValidateMessageID(id string) error {
	if id == "" {
		return errorf(ErrInvalidMessageID, "empty")
	}
	if i := strings.IndexByte(id, '.'); i >= 0 {
		return errorf(ErrInvalidMessageID, "%q contains '.' at byte %d (the signed content <id>.<timestamp>.<body> would be ambiguous)", truncate(id, 64), i)
	}
	return nil
}

// Header names of Standard Webhooks, in canonical form.
const (
	HeaderID        = "Webhook-Id"
	HeaderTimestamp = "Webhook-Timestamp"
	HeaderSignature = "Webhook-Signature"
)

// Signer signs webhook requests with every key it holds: "whsec_" secrets give
// "v1" (HMAC-SHA256) signatures and "whsk_" private keys give "v1a" (ed25519)
// ones. Holding the old and the new secret during a rotation lets receivers
// verify with either. A Signer is safe for concurrent use.
type Signer struct {
	keys parsedKeys
}

// NewSigner returns a Signer for the given secrets ("whsec_...") and private
// keys ("whsk_..."). Public keys are rejected: they cannot sign.
func NewSigner(secrets ...string) (*Signer, error) {
	keys, err := parseKeys(secrets)
	if err != nil {
		return nil, err
	}
	if len(keys.privs) != len(keys.pubs) {
		return nil, errorf(ErrInvalidSecret, "a %s public key cannot sign", PublicKeyPrefix)
	}
	return &Signer{keys: keys}, nil
}

// Sign returns the webhook-signature header value for a message: one
// space-separated entry per key, HMAC entries first. It fails with an error
// wrapping ErrInvalidMessageID when id is empty or contains '.', which would
// make "id.timestamp.body" ambiguous.
func (s *Signer) Sign(id string, ts time.Time, body []byte) (string, error) {
	buf := make([]byte, 0, 48*len(s.keys.hmacs)+93*len(s.keys.privs))
	buf, err := s.AppendSignature(buf, id, ts.Unix(), body)
	return string(buf), err
}

// AppendSignature appends the webhook-signature header value for the message
// id sent at Unix time ts to dst and returns the extended buffer. With a dst
// of enough capacity it does not allocate. Like Sign, it fails when id is
// not a valid message ID (see ValidateMessageID).
func (s *Signer) AppendSignature(dst []byte, id string, ts int64, body []byte) ([]byte, error) {
	if err := ValidateMessageID(id); err != nil {
		return dst, err
	}
	var tsBuf [20]byte
	tsStr := strconv.AppendInt(tsBuf[:0], ts, 10)
	var sum [sha256.Size]byte
	first := true
	for _, k := range s.keys.hmacs {
		mac(k, &sum, id, tsStr, body)
		if !first {
			dst = append(dst, ' ')
		}
		first = false
		dst = append(dst, "v1,"...)
		dst = base64.StdEncoding.AppendEncode(dst, sum[:])
	}
	if len(s.keys.privs) > 0 {
		msg := make([]byte, 0, len(id)+len(tsStr)+2+len(body))
		msg = append(msg, id...)
		msg = append(msg, '.')
		msg = append(msg, tsStr...)
		msg = append(msg, '.')
		msg = append(msg, body...)
		for _, k := range s.keys.privs {
			if !first {
				dst = append(dst, ' ')
			}
			first = false
			dst = append(dst, "v1a,"...)
			dst = base64.StdEncoding.AppendEncode(dst, ed25519.Sign(k, msg))
		}
	}
	return dst, nil
}

// SignHeader sets the webhook-id, webhook-timestamp and webhook-signature
// headers of h for a message with this id sent at ts with this body. It
// returns an error wrapping ErrInvalidMessageID, and leaves h alone, when id
// is empty or contains '.'.
func (s *Signer) SignHeader(h http.Header, id string, ts time.Time, body []byte) error {
	if err := ValidateMessageID(id); err != nil {
		return err
	}
	h[HeaderID] = []string{id}
	h[HeaderTimestamp] = []string{strconv.FormatInt(ts.Unix(), 10)}
	sig, err := s.Sign(id, ts, body)
	if err != nil {
		return err
	}
	h[HeaderSignature] = []string{sig}
	return nil
}
