package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestQuickRun runs the in-process scenarios at a small scale and checks that
// every side that exists measured something and the table shows it.
func TestQuickRun(t *testing.T) {
	cfg := config{rounds: 2, scale: 0.02, perRun: 30 * time.Second}
	rows := append(memoryScenario(context.Background(), cfg), webhookScenario(context.Background(), cfg)...)
	if len(rows) != 3 {
		t.Fatalf("got %d rows, want 3", len(rows))
	}
	checkRows(t, rows)
	var buf bytes.Buffer
	printTable(&buf, machineLine(time.Now()), rows, cfg, time.Second)
	out := buf.String()
	for _, want := range []string{"Machine: ", "| # | scenario | ours | raw client |", "msg/s", "ns/op", "allocs/op"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestWebhookRawRejects checks the bare verifier used as the floor: a
// tampered body, an old timestamp and a missing header fail.
func TestWebhookRawRejects(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	now := time.Now()
	body := payload1K()
	h := map[string][]string{
		"Webhook-Id":        {webhookID},
		"Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)},
		"Webhook-Signature": {"v0,xx " + rawSign(key, webhookID, now, body)},
	}
	if err := rawVerify(key, body, h, now); err != nil {
		t.Fatalf("valid signature: %v", err)
	}
	tampered := append([]byte(nil), body...)
	tampered[10] ^= 1
	if rawVerify(key, tampered, h, now) == nil {
		t.Error("tampered body verified")
	}
	if rawVerify(key, body, h, now.Add(6*time.Minute)) == nil {
		t.Error("timestamp 6 minutes old verified")
	}
	delete(h, "Webhook-Id")
	if rawVerify(key, body, h, now) == nil {
		t.Error("missing webhook-id verified")
	}
}

// TestKafkaQuickRun runs the Kafka scenario (in-process kfake) at a small
// scale: every side of every row measures something, the asynchronous
// rows included.
func TestKafkaQuickRun(t *testing.T) {
	cfg := config{rounds: 1, scale: 0.02, perRun: 30 * time.Second}
	rows := kafkaScenario(context.Background(), cfg)
	if len(rows) != 4 {
		t.Fatalf("got %d rows, want 4", len(rows))
	}
	checkRows(t, rows)
	if got := len(rows[1].ours.samples); got != cfg.rounds*kafkaAsyncRounds {
		t.Errorf("async row: %d samples, want %d", got, cfg.rounds*kafkaAsyncRounds)
	}
}

// checkRows fails t unless every side of every row measured a positive
// median, apart from sides that are n/a (no such API) or not landed.
func checkRows(t *testing.T, rows []*row) {
	t.Helper()
	for _, r := range rows {
		for name, o := range map[string]*outcome{"ours": &r.ours, "raw": &r.raw, "peer": &r.peer} {
			var na *naError
			if errors.Is(o.err, errNotLanded) || errors.As(o.err, &na) {
				continue
			}
			if o.err != nil {
				t.Errorf("%s / %s: %v", r.scenario, name, o.err)
				continue
			}
			if v, ok := o.median(r.unit); !ok || v <= 0 {
				t.Errorf("%s / %s: median %v, %v", r.scenario, name, v, ok)
			}
		}
	}
}
