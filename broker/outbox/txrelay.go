package outbox

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/go-integration/patterns/broker"
)

// TxPublisher is a broker.Publisher that also publishes a batch in one
// broker transaction together with checkpoint records, and reads the
// checkpoints back: what Kafka transactions offer (kafka.TxPublisher
// implements it). When NewRelay is given one, the relay publishes
// exactly once for consumers that read committed records only (Kafka's
// read_committed): see "Exactly once with Kafka transactions" in the
// package documentation.
type TxPublisher interface {
	broker.Publisher
	// PublishTx publishes each message to its Topic, in order, and writes
	// each checkpoint, atomically: after nil, all of it is visible to
	// read_committed consumers and to Checkpoints; after an error, none
	// of it, except when committing itself failed, when either may hold.
	PublishTx(ctx context.Context, msgs []broker.Message, checkpoints map[string][]byte) error
	// Checkpoints returns the last committed value of each of keys
	// (absent if never written), waiting for a transaction still open on
	// one of them (its publisher died) to be committed or aborted.
	Checkpoints(ctx context.Context, keys []string) (map[string][]byte, error)
}

// testHookBeforeMark, when set (tests), runs after the publisher confirmed
// a batch and before the relay marks its rows: the window in which a crash
// leaves rows published but pending.
var testHookBeforeMark func()

// checkpointKey names the checkpoint of a bucket of the relay's table.
func (r *Relay) checkpointKey(bucket int16) string {
	return "outbox/" + r.t.name + "/" + strconv.Itoa(int(bucket))
}

// encodeSeqs writes sorted seqs as ranges: "v1:1-5,7,9-10".
func encodeSeqs(seqs []int64) []byte {
	seqs = slices.Clone(seqs)
	slices.Sort(seqs)
	var b strings.Builder
	b.WriteString("v1:")
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(seqs[i], 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatInt(seqs[j], 10))
		}
		i = j + 1
	}
	return []byte(b.String())
}

// seqRanges is a decoded checkpoint.
type seqRanges [][2]int64

func decodeSeqs(v []byte) (seqRanges, error) {
	s, ok := strings.CutPrefix(string(v), "v1:")
	if !ok {
		return nil, fmt.Errorf("outbox: checkpoint %q: unknown format", v)
	}
	var out seqRanges
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseInt(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("outbox: checkpoint %q: %w", v, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(hi, 10, 64); err != nil {
				return nil, fmt.Errorf("outbox: checkpoint %q: %w", v, err)
			}
		}
		out = append(out, [2]int64{a, b})
	}
	return out, nil
}

func (s seqRanges) has(seq int64) bool {
	for _, r := range s {
		if seq >= r[0] && seq <= r[1] {
			return true
		}
	}
	return false
}

// publishBatchTx is publishBatch for a TxPublisher. Each batch's messages
// are published in one transaction with, per bucket, a checkpoint listing
// the rows of the bucket this batch marks. A relay dying after the broker
// committed and before its own commit leaves those rows pending with the
// checkpoint as the bucket's last: the next batch on the bucket reads it,
// marks the rows without publishing them and commits at once.
func (r *Relay) publishBatchTx(ctx context.Context, tx pgx.Tx, w *worker, buckets []int16, batch []row, res TraceBatchEndData) TraceBatchEndData {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.publishTimeout)
	defer cancel()
	var keys []string
	seen := map[int16]bool{}
	for i := range batch {
		if b := batch[i].bucket; !seen[b] {
			seen[b] = true
			keys = append(keys, r.checkpointKey(b))
		}
	}
	cks, err := r.txp.Checkpoints(pctx, keys)
	if err != nil {
		res.Err = fmt.Errorf("outbox: read checkpoints: %w", err)
		return res
	}
	sets := make(map[int16]seqRanges, len(cks))
	for b := range seen {
		if v, ok := cks[r.checkpointKey(b)]; ok {
			if sets[b], err = decodeSeqs(v); err != nil {
				res.Err = err
				return res
			}
		}
	}
	var already []int64
	for i := range batch {
		if sets[batch[i].bucket].has(batch[i].seq) {
			already = append(already, batch[i].seq)
		}
	}
	if len(already) > 0 {
		return r.recover(ctx, tx, w, already, res)
	}

	// The whole batch in one transaction, checkpoints included.
	msgs := make([]broker.Message, len(batch))
	bySeq := map[int16][]int64{}
	for i := range batch {
		msgs[i] = batch[i].msg
		msgs[i].Topic = batch[i].topic
		bySeq[batch[i].bucket] = append(bySeq[batch[i].bucket], batch[i].seq)
	}
	ckpts := make(map[string][]byte, len(bySeq))
	for b, seqs := range bySeq {
		ckpts[r.checkpointKey(b)] = encodeSeqs(seqs)
	}
	err = r.txp.PublishTx(pctx, msgs, ckpts)
	if err == nil {
		done := make([]int64, len(batch))
		for i := range batch {
			done[i] = batch[i].seq
		}
		return r.markCommit(ctx, tx, w, len(buckets), batch, done, nil, nil, nil, res)
	}
	if !refusal(err) {
		r.failed.Add(uint64(len(batch)))
		res.Failed = len(batch)
		res.Err = fmt.Errorf("outbox: publish %d messages in a transaction: %w", len(batch), err)
		return res
	}
	// The broker refused a message: publish one at a time to find it, each
	// transaction's checkpoint listing every row of its bucket this batch
	// published so far (the checkpoint must cover every row this batch
	// marks).
	var done, refused []int64
	var reasons []string
	cum := map[int16][]int64{}
	for i := range batch {
		x := &batch[i]
		m := x.msg
		m.Topic = x.topic
		cum[x.bucket] = append(cum[x.bucket], x.seq)
		err := r.txp.PublishTx(pctx, []broker.Message{m}, map[string][]byte{r.checkpointKey(x.bucket): encodeSeqs(cum[x.bucket])})
		switch {
		case err == nil:
			done = append(done, x.seq)
		case refusal(err):
			cum[x.bucket] = cum[x.bucket][:len(cum[x.bucket])-1]
			r.log.Error("outbox relay: broker refused a message; it will not be retried",
				"worker", w.id, "topic", x.topic, "id", x.msg.ID, "key", x.msg.Key, "seq", x.seq, "error", err)
			refused = append(refused, x.seq)
			reasons = append(reasons, err.Error())
		default:
			n := len(batch) - i
			r.failed.Add(uint64(n))
			res.Failed = n
			return r.markCommit(ctx, tx, w, len(buckets), batch, done, refused, reasons,
				fmt.Errorf("outbox: publish %d messages to %q: %w", n, x.topic, err), res)
		}
	}
	return r.markCommit(ctx, tx, w, len(buckets), batch, done, refused, reasons, nil, res)
}

// recover marks rows the checkpoints show already published and commits.
func (r *Relay) recover(ctx context.Context, tx pgx.Tx, w *worker, seqs []int64, res TraceBatchEndData) TraceBatchEndData {
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.publishTimeout)
	defer cancel()
	if _, err := tx.Exec(mctx, r.markSQL, seqs); err != nil {
		res.Err = fmt.Errorf("outbox: mark %d rows already published: %w", len(seqs), err)
		return res
	}
	if err := tx.Commit(mctx); err != nil {
		res.Err = fmt.Errorf("outbox: commit %d rows already published: %w", len(seqs), err)
		return res
	}
	res.Published = len(seqs)
	r.published.Add(uint64(len(seqs)))
	r.recovered.Add(uint64(len(seqs)))
	r.batches.Add(1)
	r.log.Info("outbox relay: rows were already published (the broker committed, a relay died before marking them); marked without publishing again",
		"worker", w.id, "rows", len(seqs))
	return res
}
