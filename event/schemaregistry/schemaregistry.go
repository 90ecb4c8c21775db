// Package schemaregistry wraps an event.Codec with the Confluent Schema
// Registry wire format, the framing every Confluent, librdkafka and Java
// client reads:
//
//	byte 0      magic byte 0
//	bytes 1-4   schema id, big-endian uint32
//	(Protobuf)  message indexes: zigzag varints, the count then the path of
//	            the message in its .proto file; the first message ([0]) is
//	            the single byte 0
//	rest        the inner codec's payload (Avro binary, Protobuf, JSON)
//
// On the first Marshal of a schema for a subject the codec looks the schema up
// in the registry, and when it is not there checks its compatibility with
// the subject's latest version and registers it (WithAutoRegister,
// WithCompatibilityCheck); the id is then cached, so later messages cost no
// round trip. Unmarshal reads the id, fetches that schema once (cached) and
// decodes with it: Avro resolves the writer's schema against the registered
// one, so a version-1 producer and a version-2 consumer interoperate.
//
// Errors follow event.Codec's contract: a registry that cannot be reached,
// or answers 5xx, 408, 429, 401, 403 or a 404 that is not the registry's,
// wraps event.ErrUnavailable (the Router retries the message; Publish fails
// and may be retried); a frame without the magic byte, too short, or naming
// a schema id the registry does not know is permanent (ErrBadFrame, ErrUnknownSchema, both wrapping event.ErrDecode:
// the Router dead-letters the message with the reason); a schema the
// registry finds incompatible is ErrIncompatible, returned by Publish and
// not retried by this package.
//
// The client is franz-go's pkg/sr: configure URLs, authentication and TLS on
// it.
package schemaregistry

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/go-integration/patterns/event"
)

// Errors of this package; test them with errors.Is.
var (
	// ErrInvalidOption is returned (wrapped) by New for a bad option or
	// argument; the error names it.
	ErrInvalidOption = errors.New("schemaregistry: invalid option")
	// ErrBadFrame is a payload that is not in the wire format: shorter than
	// the header, a magic byte other than 0, or malformed message indexes.
	// It wraps event.ErrDecode.
	ErrBadFrame = fmt.Errorf("schemaregistry: not a schema registry frame (%w)", event.ErrDecode)
	// ErrUnknownSchema is a frame naming a schema id the registry does not
	// know, or a schema of another type than the codec reads. It wraps
	// event.ErrDecode, so the Router dead-letters the message.
	ErrUnknownSchema = fmt.Errorf("schemaregistry: unknown schema (%w)", event.ErrDecode)
	// ErrIncompatible is a schema the registry refuses as incompatible with
	// the subject's earlier versions, found before the first publish.
	ErrIncompatible = errors.New("schemaregistry: schema is incompatible")
	// ErrNotRegistered is a schema missing from its subject when
	// WithAutoRegister(false) is given.
	ErrNotRegistered = errors.New("schemaregistry: schema not registered")
	// ErrSubject is a subject that cannot be named: no topic under the
	// TopicNameStrategy, no record name under the RecordNameStrategy.
	ErrSubject = errors.New("schemaregistry: cannot name the subject")
)

// Format is a codec this package can frame: event/avro and event/protobuf
// implement it. Its Marshal and Unmarshal read and write the bare payload.
type Format interface {
	event.Codec
	// SchemaType is the registry's schema type: "AVRO", "PROTOBUF" or "JSON".
	SchemaType() string
	// Schema returns the schema text to register for t.
	Schema(t event.TypeInfo) (string, error)
	// RecordName returns the fully qualified name of t's record or message,
	// for the RecordNameStrategy.
	RecordName(t event.TypeInfo) (string, error)
}

// Indexer is a Format whose frames carry message indexes (Protobuf).
type Indexer interface {
	MessageIndexes(t event.TypeInfo) ([]int, error)
}

// WriterUnmarshaler is a Format that decodes with the writer's schema (Avro),
// which Unmarshal then passes along.
type WriterUnmarshaler interface {
	UnmarshalWriter(ctx context.Context, t event.TypeInfo, writer string, data []byte, v any) error
}

// SubjectStrategy names the subject a schema is registered under.
type SubjectStrategy int

// Subject name strategies, after Confluent's serializers.
const (
	// TopicName is "<topic>-value" (the default): one schema lineage per
	// topic, so a topic carries one event type (or a union).
	TopicName SubjectStrategy = iota
	// RecordName is the record's full name ("com.example.OrderPlaced"): one
	// lineage per type, shared by every topic; for topics carrying several
	// event types.
	RecordName
	// TopicRecordName is "<topic>-<record full name>": one lineage per type
	// and topic.
	TopicRecordName
)

// String returns the strategy's Confluent name.
func (s SubjectStrategy) String() string {
	switch s {
	case TopicName:
		return "TopicNameStrategy"
	case RecordName:
		return "RecordNameStrategy"
	case TopicRecordName:
		return "TopicRecordNameStrategy"
	}
	return fmt.Sprintf("SubjectStrategy(%d)", int(s))
}

// Option configures New.
type Option interface{ apply(*config) }

type option func(*config)

func (o option) apply(c *config) { o(c) }

type config struct {
	strategy     SubjectStrategy
	autoRegister bool
	checkCompat  bool
	errs         []error
}

// WithSubjectStrategy sets how subjects are named (default TopicName).
func WithSubjectStrategy(s SubjectStrategy) Option {
	return option(func(c *config) {
		if s != TopicName && s != RecordName && s != TopicRecordName {
			c.errs = append(c.errs, fmt.Errorf("%w: WithSubjectStrategy(%v)", ErrInvalidOption, s))
			return
		}
		c.strategy = s
	})
}

// WithAutoRegister says whether the first Marshal of a schema missing from
// its subject registers it (default true). Off, such a Marshal fails with
// ErrNotRegistered: for producers whose schemas are registered by a
// deployment pipeline.
func WithAutoRegister(on bool) Option {
	return option(func(c *config) { c.autoRegister = on })
}

// WithCompatibilityCheck says whether a schema missing from its subject is
// checked against the subject's latest version before it is registered
// (default true), so an incompatible schema fails the first publish with
// ErrIncompatible and the registry's reasons.
func WithCompatibilityCheck(on bool) Option {
	return option(func(c *config) { c.checkCompat = on })
}

// Stats are the codec's counters.
type Stats struct {
	// Requests is the number of registry requests made.
	Requests uint64
	// Registered is the number of schemas this codec registered.
	Registered uint64
	// Encoded and Decoded count frames written and read.
	Encoded, Decoded uint64
}

// Codec frames an inner Format in the Confluent wire format. It is safe for
// concurrent use.
type Codec struct {
	client *sr.Client
	inner  Format
	index  Indexer           // nil unless Protobuf
	writer WriterUnmarshaler // nil unless Avro
	cfg    config

	ids     sync.Map   // idKey -> *writeInfo
	schemas sync.Map   // int id -> sr.Schema
	indexes sync.Map   // reflect.Type -> []int, Protobuf only
	mu      sync.Mutex // serialises first-use lookups, so concurrent first publishes make one set of requests

	requests, registered, encoded, decoded atomic.Uint64
}

// idKey names a type's schema without hashing its text on every Marshal;
// the text is compared on a hit instead (usually the same string, so equal
// pointers).
type idKey struct {
	topic, name string
	version     int
	goType      reflect.Type
}

type writeInfo struct {
	schema string // TypeInfo.Schema it was resolved for
	header []byte // magic, id and message indexes
	id     int
}

var _ event.Codec = (*Codec)(nil)

// New returns a codec framing inner's payloads, with client talking to the
// registry. It does no I/O: the registry is first asked on the first Marshal
// or Unmarshal. Options: WithSubjectStrategy, WithAutoRegister,
// WithCompatibilityCheck.
func New(client *sr.Client, inner Format, opts ...Option) (*Codec, error) {
	c := config{autoRegister: true, checkCompat: true}
	if client == nil {
		c.errs = append(c.errs, fmt.Errorf("%w: nil *sr.Client", ErrInvalidOption))
	}
	if inner == nil {
		c.errs = append(c.errs, fmt.Errorf("%w: nil Format", ErrInvalidOption))
	}
	for _, o := range opts {
		if o == nil {
			c.errs = append(c.errs, fmt.Errorf("%w: nil Option", ErrInvalidOption))
			continue
		}
		o.apply(&c)
	}
	if len(c.errs) > 0 {
		return nil, errors.Join(c.errs...)
	}
	cd := &Codec{client: client, inner: inner, cfg: c}
	cd.index, _ = inner.(Indexer)
	cd.writer, _ = inner.(WriterUnmarshaler)
	return cd, nil
}

// ContentType is the inner codec's: the framing is part of how the payload
// is encoded with a registry, which every consumer of the type shares.
func (c *Codec) ContentType() string { return c.inner.ContentType() }

// Stats returns the codec's counters.
func (c *Codec) Stats() Stats {
	return Stats{
		Requests: c.requests.Load(), Registered: c.registered.Load(),
		Encoded: c.encoded.Load(), Decoded: c.decoded.Load(),
	}
}

// Subject returns the subject t's schema is registered under.
func (c *Codec) Subject(t event.TypeInfo) (string, error) {
	record := func() (string, error) {
		n, err := c.inner.RecordName(t)
		if err != nil {
			return "", fmt.Errorf("%w: %s: %w", ErrSubject, t.Name, err)
		}
		return n, nil
	}
	switch c.cfg.strategy {
	case RecordName:
		return record()
	case TopicRecordName:
		if t.Topic == "" {
			return "", fmt.Errorf("%w: %s: no topic for the TopicRecordNameStrategy", ErrSubject, t.Name)
		}
		n, err := record()
		if err != nil {
			return "", err
		}
		return t.Topic + "-" + n, nil
	}
	if t.Topic == "" {
		return "", fmt.Errorf("%w: %s: no topic for the TopicNameStrategy", ErrSubject, t.Name)
	}
	return t.Topic + "-value", nil
}

// Marshal writes the frame header of t's schema, looked up or registered on
// first use, then the inner codec's payload.
func (c *Codec) Marshal(ctx context.Context, t event.TypeInfo, v any) ([]byte, error) {
	w, err := c.writeInfo(ctx, t)
	if err != nil {
		return nil, err
	}
	payload, err := c.inner.Marshal(ctx, t, v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(w.header)+len(payload))
	out = append(append(out, w.header...), payload...)
	c.encoded.Add(1)
	return out, nil
}

// SchemaID returns the id of t's schema (t.Topic set as Publish would set
// it), looking it up, checking and registering it as the first Marshal
// would, and caching it. Call it at start-up to fail there, rather than on
// the first publish, when a schema is incompatible or the registry is
// unreachable:
//
//	for _, t := range reg.Types() {
//		t.Topic = "orders"
//		if _, err := codec.SchemaID(ctx, t); err != nil { ... }
//	}
func (c *Codec) SchemaID(ctx context.Context, t event.TypeInfo) (int, error) {
	w, err := c.writeInfo(ctx, t)
	if err != nil {
		return 0, err
	}
	return w.id, nil
}

func (c *Codec) writeInfo(ctx context.Context, t event.TypeInfo) (*writeInfo, error) {
	key := idKey{topic: t.Topic, name: t.Name, version: t.Version, goType: t.GoType}
	if c.cfg.strategy == RecordName {
		key.topic = "" // the subject does not depend on it
	}
	if w, ok := c.ids.Load(key); ok && w.(*writeInfo).schema == t.Schema {
		return w.(*writeInfo), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.ids.Load(key); ok && w.(*writeInfo).schema == t.Schema {
		return w.(*writeInfo), nil
	}
	subject, err := c.Subject(t)
	if err != nil {
		return nil, err
	}
	text, err := c.inner.Schema(t)
	if err != nil {
		return nil, err
	}
	var index []int
	if c.index != nil {
		if index, err = c.index.MessageIndexes(t); err != nil {
			return nil, err
		}
	}
	schema := sr.Schema{Schema: text, Type: schemaType(c.inner.SchemaType())}
	id, err := c.resolve(ctx, subject, schema)
	if err != nil {
		return nil, err
	}
	header, _ := new(sr.ConfluentHeader).AppendEncode(make([]byte, 0, 16), id, index)
	w := &writeInfo{schema: t.Schema, header: header, id: id}
	c.ids.Store(key, w)
	c.schemas.LoadOrStore(id, schema) // a consumer in this process needs no fetch
	return w, nil
}

// resolve returns schema's id in subject: looked up, else checked and
// registered.
func (c *Codec) resolve(ctx context.Context, subject string, schema sr.Schema) (int, error) {
	c.requests.Add(1)
	ss, err := c.client.LookupSchema(ctx, subject, schema)
	if err == nil {
		return ss.ID, nil
	}
	if !isCode(err, sr.ErrSubjectNotFound, sr.ErrSchemaNotFound) {
		return 0, c.registryErr(fmt.Sprintf("look up schema in subject %q", subject), err)
	}
	if !c.cfg.autoRegister {
		return 0, fmt.Errorf("%w: subject %q has no such schema, and auto-registration is off", ErrNotRegistered, subject)
	}
	if c.cfg.checkCompat {
		c.requests.Add(1)
		res, err := c.client.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subject, -1, schema)
		switch {
		case err == nil && !res.Is:
			why := strings.Join(res.Messages, "; ")
			if why == "" {
				why = "the registry gave no reason"
			}
			return 0, fmt.Errorf("%w with the latest version of subject %q: %s", ErrIncompatible, subject, why)
		case err != nil && !isCode(err, sr.ErrSubjectNotFound, sr.ErrVersionNotFound):
			// A subject without versions has nothing to be incompatible with.
			return 0, c.registryErr(fmt.Sprintf("check compatibility in subject %q", subject), err)
		}
	}
	c.requests.Add(1)
	id, err := c.client.RegisterSchema(ctx, subject, schema, -1, -1)
	if err != nil {
		return 0, c.registryErr(fmt.Sprintf("register schema in subject %q", subject), err)
	}
	c.registered.Add(1)
	return id, nil
}

// Unmarshal reads the frame: the schema id (its schema fetched once), the
// message indexes for Protobuf, then decodes the payload with the inner
// codec, with the writer's schema for Avro.
func (c *Codec) Unmarshal(ctx context.Context, t event.TypeInfo, data []byte, v any) error {
	if len(data) < 5 {
		return fmt.Errorf("%w: %d bytes, the header is 5", ErrBadFrame, len(data))
	}
	if data[0] != 0 {
		return fmt.Errorf("%w: magic byte %#02x, want 0", ErrBadFrame, data[0])
	}
	id := int(binary.BigEndian.Uint32(data[1:5]))
	payload := data[5:]
	// The schema first: its type says whether indexes follow.
	schema, err := c.schemaByID(ctx, id)
	if err != nil {
		return err
	}
	if want := schemaType(c.inner.SchemaType()); schema.Type != want {
		return fmt.Errorf("%w: schema id %d is %s, this codec reads %s", ErrUnknownSchema, id, schema.Type, want)
	}
	if c.index != nil {
		var index []int
		if len(payload) > 0 && payload[0] == 0 {
			index, payload = firstMessage, payload[1:] // the usual case, without allocating
		} else if index, payload, err = new(sr.ConfluentHeader).DecodeIndex(payload, maxIndexes); err != nil || slices.ContainsFunc(index, func(i int) bool { return i < 0 }) {
			return fmt.Errorf("%w: bad message indexes", ErrBadFrame)
		}
		if schema.Schema == t.Schema {
			// The writer used our .proto file: its indexes must name our message.
			if own, err := c.ownIndexes(t); err == nil && !slices.Equal(own, index) {
				return fmt.Errorf("%w: message indexes %v are not %s's %v", event.ErrDecode, index, t.Name, own)
			}
		}
	}
	if c.writer != nil {
		err = c.writer.UnmarshalWriter(ctx, t, schema.Schema, payload, v)
	} else {
		err = c.inner.Unmarshal(ctx, t, payload, v)
	}
	if err != nil {
		return err
	}
	c.decoded.Add(1)
	return nil
}

var firstMessage = []int{0}

// maxIndexes bounds the message-index count a frame may claim (the nesting
// depth of a message), so a corrupt count allocates nothing large.
const maxIndexes = 64

// ownIndexes returns t's message indexes, computed once per Go type.
func (c *Codec) ownIndexes(t event.TypeInfo) ([]int, error) {
	if x, ok := c.indexes.Load(t.GoType); ok {
		return x.([]int), nil
	}
	x, err := c.index.MessageIndexes(t)
	if err != nil {
		return nil, err
	}
	c.indexes.Store(t.GoType, x)
	return x, nil
}

func (c *Codec) schemaByID(ctx context.Context, id int) (sr.Schema, error) {
	if s, ok := c.schemas.Load(id); ok {
		return s.(sr.Schema), nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.schemas.Load(id); ok {
		return s.(sr.Schema), nil
	}
	c.requests.Add(1)
	s, err := c.client.SchemaByID(ctx, id)
	if err != nil {
		if isCode(err, sr.ErrSchemaNotFound) {
			return sr.Schema{}, fmt.Errorf("%w: id %d: the registry does not know it", ErrUnknownSchema, id)
		}
		return sr.Schema{}, c.registryErr(fmt.Sprintf("fetch schema id %d", id), err)
	}
	actual, _ := c.schemas.LoadOrStore(id, s)
	return actual.(sr.Schema), nil
}

// registryErr wraps event.ErrUnavailable around what may pass (the registry
// unreachable or overloaded, the context ended, credentials refused while
// they are rotated), and ErrIncompatible around a 409.
func (c *Codec) registryErr(op string, err error) error {
	var re *sr.ResponseError
	if errors.As(err, &re) {
		switch {
		case re.StatusCode >= 500, re.StatusCode == http.StatusRequestTimeout, re.StatusCode == http.StatusTooManyRequests,
			re.StatusCode == http.StatusUnauthorized, re.StatusCode == http.StatusForbidden,
			// A 404 without a registry error code is a wrong URL or a proxy, not an answer.
			re.StatusCode == http.StatusNotFound && re.ErrorCode == 0:
			return fmt.Errorf("schemaregistry: %s: %w: %w", op, event.ErrUnavailable, err)
		case re.StatusCode == http.StatusConflict:
			return fmt.Errorf("%w: %s: %w", ErrIncompatible, op, err)
		}
		return fmt.Errorf("schemaregistry: %s: %w", op, err)
	}
	return fmt.Errorf("schemaregistry: %s: %w: %w", op, event.ErrUnavailable, err)
}

func isCode(err error, codes ...*sr.Error) bool {
	var re *sr.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, c := range codes {
		if re.ErrorCode == c.Code {
			return true
		}
	}
	return false
}

func schemaType(s string) sr.SchemaType {
	switch s {
	case "PROTOBUF":
		return sr.TypeProtobuf
	case "JSON":
		return sr.TypeJSON
	}
	return sr.TypeAvro
}
