// Package webhook implements Standard Webhooks (https://www.standardwebhooks.com):
// signing and verifying requests, a Receiver middleware for the side that gets
// webhooks, and a Sender for the side that delivers them.
//
// # Signatures
//
// A request carries three headers: webhook-id (the message ID, the same on
// every attempt), webhook-timestamp (Unix seconds of this attempt) and
// webhook-signature (a space-separated list of "v1,<base64 HMAC-SHA256>" or
// "v1a,<base64 ed25519>" entries). The signed content is
// "<id>.<timestamp>.<raw body>", so message IDs must not contain '.'
// (ValidateMessageID; ErrInvalidMessageID). Secrets look like "whsec_<base64>" (HMAC),
// "whsk_<base64>" (ed25519 private key) and "whpk_<base64>" (ed25519 public
// key). A Signer signs with every key it holds, so keys can be rotated; a
// Verifier accepts a request when any signature matches any of its keys and
// the timestamp is within its tolerance (five minutes by default).
//
// # Receiving
//
// Receiver reads the raw body under a size limit, verifies it, rejects replays
// of a message ID through a DedupStore (MemoryDedup here, PostgreSQL in
// webhook/pgstore) and hands the verified Event to the application. It answers
// 2xx only when the application's handler succeeded.
//
// # Sending
//
// Sender delivers messages to the endpoints subscribed to their type, from a
// Store (MemoryStore here, PostgreSQL in webhook/pgstore for durable delivery
// shared by several processes). Every attempt has the same webhook-id and a
// fresh timestamp and signature; failures are retried on a schedule, 410 Gone
// disables the endpoint, redirects are never followed, and an SSRF guard
// refuses addresses that are not public at dial time (a table generated from
// IANA's special-purpose address registries). Run delivers until its context
// ends or Close, which drains the attempts in flight.
//
// # CloudEvents
//
// WithCloudEvents makes each delivery also a CloudEvent over the HTTP
// binding, in binary mode (ce-* headers, the payload as the body) or
// structured mode (application/cloudevents+json), still signed over the
// exact body sent. A Receiver reads CloudEvents in either mode into
// Event.CloudEvent and answers 400 with ErrInvalidCloudEvent when a required
// attribute is missing or the event is malformed; WithUnsignedCloudEvents
// takes CloudEvents from producers that do not sign.
//
// # Options, tracing, stats
//
// NewVerifier, NewSender and NewReceiver take sealed options (VerifierOption,
// SenderOption, ReceiverOption; WithLogger, WithTracer and WithClock fit
// several) and refuse bad values with ErrInvalidOption. Tracers in the style
// of pgx's (AttemptTracer, DisableTracer, StoreErrorTracer, ReceiveTracer,
// RejectTracer) see every attempt and request; Sender.Stats and
// Receiver.Stats count them.
//
// The package imports only the standard library.
package webhook
