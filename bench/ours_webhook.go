package main

import (
	"net/http"
	"time"

	"github.com/go-integration/patterns/webhook"
)

// oursWebhook returns sign and verify built on package webhook for a
// Standard Webhooks secret: Signer.Sign and Verifier.Verify with defaults
// (±5 minutes tolerance).
func oursWebhook(secret string) (webhookOps, error) {
	s, err := webhook.NewSigner(secret)
	if err != nil {
		return webhookOps{}, err
	}
	v, err := webhook.NewVerifier([]string{secret})
	if err != nil {
		return webhookOps{}, err
	}
	return webhookOps{
		sign: func(id string, ts time.Time, body []byte) (string, error) {
			return s.Sign(id, ts, body)
		},
		verify: func(body []byte, h http.Header) error { return v.Verify(h, body) },
	}, nil
}
