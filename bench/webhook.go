package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Webhook scenario: sign, then verify, a 1 KiB body with the Standard
// Webhooks scheme (v1, HMAC-SHA256 over "id.timestamp.body", base64).
// Verification includes the ±5 minute timestamp check on every side.

// webhookSecret is a Standard Webhooks secret: "whsec_" and base64 of the key.
const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

const webhookID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"

// webhookOps is one side: sign returns the webhook-signature header value;
// verify checks the three headers against the body.
type webhookOps struct {
	sign   func(id string, ts time.Time, body []byte) (string, error)
	verify func(body []byte, h http.Header) error
}

func webhookScenario(ctx context.Context, cfg config) []*row {
	// Short rounds, three times as many: a microbenchmark on a shared
	// machine is steadier as a median of many short runs.
	n := cfg.scaled(20_000)
	cfg.rounds *= 3
	sign := &row{scenario: "webhook sign, 1 KiB body", unit: nsPerOp, n: n}
	verify := &row{scenario: "webhook verify (signature + timestamp), 1 KiB body", unit: nsPerOp, n: n}
	rows := []*row{sign, verify}
	for _, r := range rows {
		r.ours.label = "webhook"
		r.raw.label = "crypto/hmac + crypto/sha256 + encoding/base64, a new HMAC per call"
		r.peer.label = "standard-webhooks/libraries v0.0.1 (the Standard Webhooks reference Go library)"
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(webhookSecret, "whsec_"))
	if err != nil {
		panic(err)
	}
	swh, err := standardwebhooks.NewWebhook(webhookSecret)
	if err != nil {
		panic(err)
	}
	peer := webhookOps{sign: swh.Sign, verify: swh.Verify}
	raw := webhookOps{
		sign:   func(id string, ts time.Time, body []byte) (string, error) { return rawSign(key, id, ts, body), nil },
		verify: func(body []byte, h http.Header) error { return rawVerify(key, body, h, time.Now()) },
	}
	ours, oursErr := oursWebhook(webhookSecret)
	body := payload1K()
	for _, op := range []struct {
		r      *row
		verify bool
	}{{sign, false}, {verify, true}} {
		measure := func(ops webhookOps, opsErr error) func(context.Context, int) ([]sample, error) {
			return one(func(ctx context.Context, _ int) (sample, error) {
				if opsErr != nil {
					return sample{}, opsErr
				}
				return webhookRun(ctx, ops, raw.verify, op.verify, body, n)
			})
		}
		runRounds(ctx, cfg.rounds, cfg.perRun,
			side{[]*outcome{&op.r.ours}, measure(ours, oursErr)},
			side{[]*outcome{&op.r.raw}, measure(raw, nil)},
			side{[]*outcome{&op.r.peer}, measure(peer, nil)},
		)
	}
	return rows
}

// webhookRun checks that the side's signature verifies with its own verify
// and with bare (so every side computes the same thing) and that a tampered
// body fails, then times n signs or n verifies on one goroutine.
func webhookRun(ctx context.Context, ops webhookOps, bare func([]byte, http.Header) error, verify bool, body []byte, n int) (sample, error) {
	now := time.Now()
	sig, err := ops.sign(webhookID, now, body)
	if err != nil {
		return sample{}, err
	}
	h := http.Header{}
	h.Set("webhook-id", webhookID)
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", sig)
	if err := ops.verify(body, h); err != nil {
		return sample{}, fmt.Errorf("own signature does not verify: %w", err)
	}
	if err := bare(body, h); err != nil {
		return sample{}, fmt.Errorf("signature does not verify with the bare scheme: %w", err)
	}
	tampered := append([]byte(nil), body...)
	tampered[0] ^= 1
	if ops.verify(tampered, h) == nil {
		return sample{}, errors.New("verify accepted a tampered body")
	}
	var sink int
	for range 1000 { // warm up
		if verify {
			_ = ops.verify(body, h)
		} else {
			s, _ := ops.sign(webhookID, now, body)
			sink += len(s)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i := range n {
		if i%1024 == 0 && ctx.Err() != nil {
			return sample{}, ctx.Err()
		}
		if verify {
			if err := ops.verify(body, h); err != nil {
				return sample{}, err
			}
		} else {
			s, err := ops.sign(webhookID, now, body)
			if err != nil {
				return sample{}, err
			}
			sink += len(s)
		}
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	_ = sink
	return sample{n: n, elapsed: elapsed, allocs: int64(after.Mallocs-before.Mallocs) / int64(n)}, nil
}

// rawSign is the bare scheme: v1,base64(HMAC-SHA256(key, id.timestamp.body)).
func rawSign(key []byte, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(rawMAC(key, id, ts.Unix(), body))
}

func rawMAC(key []byte, id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	var buf [24]byte
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(buf[:0], ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// rawVerify checks the headers against body: timestamp within ±5 minutes of
// now, and any "v1," signature equal (in constant time) to the expected MAC.
func rawVerify(key, body []byte, h http.Header, now time.Time) error {
	id, tsText, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || tsText == "" || sigs == "" {
		return errors.New("missing webhook headers")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("bad webhook-timestamp: %w", err)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("webhook-timestamp outside tolerance")
	}
	want := rawMAC(key, id, ts, body)
	var got [sha256.Size]byte
	for sig := range strings.FieldsSeq(sigs) {
		b64, ok := strings.CutPrefix(sig, "v1,")
		if !ok {
			continue
		}
		if n, err := base64.StdEncoding.Decode(got[:], []byte(b64)); err == nil && hmac.Equal(got[:n], want) {
			return nil
		}
	}
	return errors.New("no matching signature")
}
