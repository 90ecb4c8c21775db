package event

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/go-integration/patterns/broker"
)

// Publish encodes v as a CloudEvent (see Encode) and publishes it to topic
// with routing or partition key key. It returns what the publisher returns:
// nil once the broker has durably accepted the event.
func Publish[T any](ctx context.Context, r *Registry, p broker.Publisher, topic, key string, v T, opts ...PublishOption) error {
	m, err := Encode(ctx, r, topic, key, v, opts...)
	if err != nil {
		return err
	}
	return p.Publish(ctx, topic, m)
}

// Encode returns v as a broker.Message carrying a CloudEvent of v's
// registered type: in binary mode (the default) the codec's bytes as Payload
// and the attributes in Header (specversion, id, source, type, time,
// dataversion, subject and extensions when given, named by the Headers
// scheme, and the codec's content type); in structured mode the whole event
// as JSON. The message's ID is the event id and its Time the event time, so
// broker deduplication and CloudEvents deduplication agree. Use it to publish
// batches or to write events to an outbox. topic is where the message will
// be published; the codec gets it in TypeInfo.Topic (a Schema Registry codec
// names the subject after it).
func Encode[T any](ctx context.Context, r *Registry, topic, key string, v T, opts ...PublishOption) (broker.Message, error) {
	e := r.byGo(reflect.TypeFor[T]())
	if e == nil {
		return broker.Message{}, fmt.Errorf("%w: %v (Register it first)", ErrNotRegistered, reflect.TypeFor[T]())
	}
	var pc *publishConfig
	if len(opts) > 0 {
		var err error
		if pc, err = publishOptions(opts); err != nil {
			return broker.Message{}, err
		}
	}
	info := e.info
	info.Topic = topic
	data, err := e.codec.Marshal(ctx, info, v)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			return broker.Message{}, fmt.Errorf("event: encode %s: %w", e.info.Name, err)
		}
		return broker.Message{}, fmt.Errorf("%w %s: %w", ErrEncode, e.info.Name, err)
	}
	return r.envelope(e, key, data, pc)
}

func publishOptions(opts []PublishOption) (*publishConfig, error) {
	pc := new(publishConfig)
	for _, o := range opts {
		if o == nil {
			invalid(&pc.errs, "nil PublishOption")
			continue
		}
		o.applyPublish(pc)
	}
	if len(pc.errs) > 0 {
		return nil, joinErrs(pc.errs)
	}
	return pc, nil
}

// envelope wraps data of type e in a CloudEvent.
func (r *Registry) envelope(e *entry, key string, data []byte, pc *publishConfig) (broker.Message, error) {
	env := r.env
	var id, subject, dataURI string
	var at time.Time
	var ext map[string]string
	if pc != nil {
		if pc.env.set&setSource != 0 {
			env.source = pc.env.source
		}
		if pc.env.set&setHeaders != 0 {
			env.headers = pc.env.headers
		}
		if pc.env.set&setMode != 0 {
			env.mode = pc.env.mode
		}
		id, subject, dataURI, at, ext = pc.id, pc.subject, pc.dataURI, pc.at, pc.ext
	}
	if env.source == "" {
		return broker.Message{}, fmt.Errorf("%w: %s: no source (give NewRegistry or Publish WithSource)", ErrMissingAttribute, AttrSource)
	}
	if id == "" {
		id = broker.NewID()
	}
	if at.IsZero() {
		at = time.Now()
	}
	at = at.Round(0) // no monotonic reading: the time travels as text
	ts := at.UTC().Format(time.RFC3339Nano)

	m := broker.Message{ID: id, Key: key, Time: at}
	if env.mode == Structured {
		payload, err := structured(e, id, env.source, ts, subject, dataURI, ext, data)
		if err != nil {
			return broker.Message{}, err
		}
		m.Payload = payload
		m.Header = map[string]string{env.headers.contentType: StructuredContentType}
		return m, nil
	}
	h := env.headers
	// The exact size: up to 8 entries a map is one small group.
	n := 7 + len(ext)
	if subject != "" {
		n++
	}
	if dataURI != "" {
		n++
	}
	hdr := make(map[string]string, n)
	hdr[h.specversion] = SpecVersion
	hdr[h.id] = id
	hdr[h.source] = env.source
	hdr[h.typ] = e.info.Name
	hdr[h.time] = ts
	hdr[h.dataversion] = e.versionStr
	hdr[h.contentType] = e.contentType
	if subject != "" {
		hdr[h.subject] = subject
	}
	if dataURI != "" {
		hdr[h.dataschema] = dataURI
	}
	for k, v := range ext {
		hdr[h.prefix+k] = v
	}
	m.Payload = data
	m.Header = hdr
	return m, nil
}

// structured renders the JSON event format: data as a JSON value when the
// codec writes JSON, else base64 in data_base64.
func structured(e *entry, id, source, ts, subject, dataURI string, ext map[string]string, data []byte) ([]byte, error) {
	doc := make(map[string]any, 9+len(ext))
	for k, v := range ext {
		doc[k] = v
	}
	doc[AttrSpecVersion] = SpecVersion
	doc[AttrID] = id
	doc[AttrSource] = source
	doc[AttrType] = e.info.Name
	doc[AttrTime] = ts
	doc[AttrDataContentType] = e.contentType
	doc[DataVersionAttribute] = e.info.Version
	if subject != "" {
		doc[AttrSubject] = subject
	}
	if dataURI != "" {
		doc[AttrDataSchema] = dataURI
	}
	if isJSON(e.contentType) {
		if !json.Valid(data) {
			return nil, fmt.Errorf("%w %s: codec %T says %s but wrote invalid JSON", ErrEncode, e.info.Name, e.codec, e.contentType)
		}
		doc["data"] = json.RawMessage(data)
	} else {
		doc["data_base64"] = base64.StdEncoding.EncodeToString(data)
	}
	return json.Marshal(doc)
}
