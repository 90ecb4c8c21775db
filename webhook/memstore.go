package webhook

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/go-integration/patterns/internal/ids"
)

// MemoryStore is a Store in memory: for tests and for a single process that
// can afford to lose pending deliveries on restart. Use NewMemoryStore.
type MemoryStore struct {
	mu         sync.Mutex
	endpoints  map[string]*Endpoint
	messages   map[string]Message
	deliveries []*memDelivery
	byID       map[string]*memDelivery
	attempts   map[string][]Attempt
	seq        int
}

type memDelivery struct {
	Delivery
	endpointID string
	leaseUntil time.Time
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{endpoints: map[string]*Endpoint{}, messages: map[string]Message{},
		byID: map[string]*memDelivery{}, attempts: map[string][]Attempt{}}
}

func cloneEndpoint(e Endpoint) Endpoint {
	e.Secrets = slices.Clone(e.Secrets)
	e.EventTypes = slices.Clone(e.EventTypes)
	return e
}

func validateEndpoint(e Endpoint) error {
	if e.ID == "" || e.URL == "" || len(e.Secrets) == 0 {
		return fmt.Errorf("webhook: endpoint needs an ID, a URL and a secret (got ID %q, URL %q, %d secrets)", e.ID, e.URL, len(e.Secrets))
	}
	return nil
}

// SaveEndpoint implements Store.
func (s *MemoryStore) SaveEndpoint(_ context.Context, e Endpoint) error {
	if err := validateEndpoint(e); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e = cloneEndpoint(e)
	if old, ok := s.endpoints[e.ID]; ok {
		e.FailingSince = old.FailingSince
	} else {
		e.FailingSince = time.Time{}
	}
	s.endpoints[e.ID] = &e
	return nil
}

// Endpoint implements Store.
func (s *MemoryStore) Endpoint(_ context.Context, id string) (Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.endpoints[id]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: endpoint %q", ErrNotFound, id)
	}
	return cloneEndpoint(*e), nil
}

// DisableEndpoint implements Store.
func (s *MemoryStore) DisableEndpoint(_ context.Context, id, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.endpoints[id]
	if !ok {
		return fmt.Errorf("%w: endpoint %q", ErrNotFound, id)
	}
	e.Disabled, e.DisabledReason = true, reason
	for _, d := range s.deliveries {
		if d.endpointID == id && d.State == DeliveryPending {
			d.State, d.LastError, d.Lease, d.leaseUntil = DeliveryFailed, "endpoint disabled: "+reason, "", time.Time{}
		}
	}
	return nil
}

// EnableEndpoint implements Store.
func (s *MemoryStore) EnableEndpoint(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.endpoints[id]
	if !ok {
		return fmt.Errorf("%w: endpoint %q", ErrNotFound, id)
	}
	e.Disabled, e.DisabledReason, e.FailingSince = false, "", time.Time{}
	return nil
}

// Enqueue implements Store.
func (s *MemoryStore) Enqueue(_ context.Context, m Message, at time.Time) (int, error) {
	if err := ValidateMessageID(m.ID); err != nil {
		return 0, fmt.Errorf("webhook: Enqueue: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.messages[m.ID]; !ok {
		m.Payload = slices.Clone(m.Payload)
		s.messages[m.ID] = m
	}
	m = s.messages[m.ID]
	ids := make([]string, 0, len(s.endpoints))
	for id := range s.endpoints {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	n := 0
	for _, id := range ids {
		e := s.endpoints[id]
		if e.Disabled || !e.Subscribed(m.Type) || s.find(m.ID, id) != nil {
			continue
		}
		s.seq++
		d := &memDelivery{Delivery: Delivery{ID: strconv.Itoa(s.seq), Message: m, State: DeliveryPending, NextAttempt: at}, endpointID: id}
		s.deliveries = append(s.deliveries, d)
		s.byID[d.ID] = d
		n++
	}
	return n, nil
}

func (s *MemoryStore) find(messageID, endpointID string) *memDelivery {
	for _, d := range s.deliveries {
		if d.Message.ID == messageID && d.endpointID == endpointID {
			return d
		}
	}
	return nil
}

func (s *MemoryStore) view(d *memDelivery) Delivery {
	out := d.Delivery
	out.Endpoint = cloneEndpoint(*s.endpoints[d.endpointID])
	return out
}

// Claim implements Store.
func (s *MemoryStore) Claim(_ context.Context, now time.Time, lease time.Duration, limit int) ([]Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*memDelivery
	for _, d := range s.deliveries {
		if d.State == DeliveryPending && !d.NextAttempt.After(now) && !d.leaseUntil.After(now) && !s.endpoints[d.endpointID].Disabled {
			due = append(due, d)
		}
	}
	slices.SortStableFunc(due, func(a, b *memDelivery) int { return a.NextAttempt.Compare(b.NextAttempt) })
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]Delivery, 0, len(due))
	for _, d := range due {
		d.Lease, d.leaseUntil = ids.Hex(), now.Add(lease)
		out = append(out, s.view(d))
	}
	return out, nil
}

// Record implements Store.
func (s *MemoryStore) Record(_ context.Context, d Delivery, a Attempt) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	md, ok := s.byID[d.ID]
	if !ok {
		return time.Time{}, fmt.Errorf("%w: delivery %q", ErrNotFound, d.ID)
	}
	a.DeliveryID = d.ID
	a.ResponseBody = slices.Clone(a.ResponseBody)
	s.attempts[d.ID] = append(s.attempts[d.ID], a)
	e := s.endpoints[md.endpointID]
	if a.State == DeliverySucceeded {
		e.FailingSince = time.Time{}
	} else if e.FailingSince.IsZero() {
		e.FailingSince = a.Start
	}
	if md.Lease != d.Lease || md.Lease == "" || md.State != DeliveryPending {
		return e.FailingSince, fmt.Errorf("%w: delivery %s", ErrLeaseLost, d.ID)
	}
	md.State, md.Attempts, md.NextAttempt, md.LastError = a.State, a.Number, a.NextAttempt, a.Error
	md.Lease, md.leaseUntil = "", time.Time{}
	return e.FailingSince, nil
}

// Resend implements Store.
func (s *MemoryStore) Resend(_ context.Context, messageID, endpointID string, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.deliveries {
		if d.Message.ID == messageID && (endpointID == "" || d.endpointID == endpointID) {
			s.reset(d, now)
			n++
		}
	}
	if n == 0 {
		return 0, fmt.Errorf("%w: deliveries of message %q", ErrNotFound, messageID)
	}
	return n, nil
}

func (s *MemoryStore) reset(d *memDelivery, now time.Time) {
	d.State, d.Attempts, d.NextAttempt, d.LastError, d.Lease, d.leaseUntil = DeliveryPending, 0, now, "", "", time.Time{}
}

// ResendFailed implements Store.
func (s *MemoryStore) ResendFailed(_ context.Context, endpointID string, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, d := range s.deliveries {
		if d.endpointID == endpointID && d.State == DeliveryFailed {
			s.reset(d, now)
			n++
		}
	}
	return n, nil
}

// Deliveries implements Store.
func (s *MemoryStore) Deliveries(_ context.Context, messageID string) ([]Delivery, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Delivery
	for _, d := range s.deliveries {
		if d.Message.ID == messageID {
			v := s.view(d)
			v.Lease = ""
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(a, b Delivery) int {
		if a.Endpoint.ID < b.Endpoint.ID {
			return -1
		}
		if a.Endpoint.ID > b.Endpoint.ID {
			return 1
		}
		return 0
	})
	return out, nil
}

// Attempts implements Store.
func (s *MemoryStore) Attempts(_ context.Context, deliveryID string) ([]Attempt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.attempts[deliveryID]), nil
}

// Purge deletes the messages created before cutoff that have no pending
// delivery, with their deliveries and attempt logs, and returns how many
// messages it deleted.
func (s *MemoryStore) Purge(_ context.Context, cutoff time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]bool{}
	for id, m := range s.messages {
		keep[id] = !m.Time.Before(cutoff)
	}
	for _, d := range s.deliveries {
		if d.State == DeliveryPending {
			keep[d.Message.ID] = true
		}
	}
	var n int64
	for id, k := range keep {
		if !k {
			delete(s.messages, id)
			n++
		}
	}
	ds := s.deliveries[:0]
	for _, d := range s.deliveries {
		if keep[d.Message.ID] {
			ds = append(ds, d)
		} else {
			delete(s.byID, d.ID)
			delete(s.attempts, d.ID)
		}
	}
	clear(s.deliveries[len(ds):])
	s.deliveries = ds
	return n, nil
}
