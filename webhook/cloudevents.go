package webhook

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// CloudEventsMode is a content mode of the CloudEvents HTTP protocol binding
// (https://github.com/cloudevents/spec, bindings/http-protocol-binding.md).
type CloudEventsMode int

// Content modes of the CloudEvents HTTP binding.
const (
	// CloudEventsBinary puts the attributes in ce-* headers and the data,
	// unchanged, in the body with its own Content-Type.
	CloudEventsBinary CloudEventsMode = iota + 1
	// CloudEventsStructured sends the whole event as JSON
	// (application/cloudevents+json): the attributes and the data, inline
	// when it is JSON, otherwise base64 in data_base64.
	CloudEventsStructured
)

// String returns "binary" or "structured".
func (m CloudEventsMode) String() string {
	switch m {
	case CloudEventsBinary:
		return "binary"
	case CloudEventsStructured:
		return "structured"
	}
	return "CloudEventsMode(" + strconv.Itoa(int(m)) + ")"
}

// CloudEvents constants: the only specification version this package speaks,
// and the media types of the JSON event format and of its batch form.
const (
	CloudEventsSpecVersion          = "1.0"
	ContentTypeCloudEventsJSON      = "application/cloudevents+json"
	ContentTypeCloudEventsBatchJSON = "application/cloudevents-batch+json"
)

// ErrInvalidCloudEvent is wrapped by the error a Receiver answers with 400
// when a request is a CloudEvent it cannot accept (a required attribute
// missing or empty, a specversion other than 1.0, a structured body that is
// not a JSON object, bad data_base64, ...), or is not a CloudEvent at all
// under WithUnsignedCloudEvents; the error names the attribute. The handler
// is not called, and a sender should not retry: the same request fails the
// same way. Sender.Send returns it for a message that cannot be a
// CloudEvent (an empty Type) when WithCloudEvents is on.
var ErrInvalidCloudEvent = errors.New("webhook: invalid CloudEvent")

func invalidCE(format string, args ...any) error {
	return errorf(ErrInvalidCloudEvent, format, args...)
}

// CloudEvent is a CloudEvent received over HTTP (Event.CloudEvent), in
// either content mode. Attribute values are decoded: percent-decoding of
// binary-mode headers is undone, data_base64 is decoded into Data.
type CloudEvent struct {
	// Mode is the content mode the request used.
	Mode CloudEventsMode
	// SpecVersion is always "1.0" (other versions are refused).
	SpecVersion string
	// ID, Source and Type are the required attributes, never empty. ID and
	// Source together identify the event.
	ID     string
	Source string
	Type   string
	// Subject is the optional subject attribute.
	Subject string
	// Time is the optional time attribute; zero when absent.
	Time time.Time
	// DataContentType is the media type of Data: the Content-Type header
	// in binary mode, the datacontenttype attribute in structured mode
	// (where absent means JSON).
	DataContentType string
	// DataSchema is the optional dataschema attribute.
	DataSchema string
	// Data is the event's data: the body in binary mode; in structured
	// mode the JSON value of "data" as it appears in the body (a JSON
	// string's contents when DataContentType is set and not JSON), or
	// data_base64 decoded. Nil when the event has none.
	Data []byte
	// Extensions holds the other attributes in their canonical string
	// form (numbers in decimal, booleans "true"/"false"); nil when none.
	// Names are lowercase letters and digits; members or headers with
	// other names are not attributes and are left out.
	Extensions map[string]string
}

// ceConfig is a Sender's CloudEvents setting.
type ceConfig struct {
	mode    CloudEventsMode
	source  string
	subject func(Message) string
}

// WithCloudEvents makes every delivery of the Sender also a CloudEvent, in
// the given content mode, with source as the "source" attribute (a non-empty
// URI-reference naming the sending system, such as
// "https://billing.example.com" or "/billing"). The other attributes come
// from the Message: id is Message.ID (the webhook-id), type is
// Message.Type (so Send refuses an empty Type), time is Message.Time (left
// out when zero, which only a message enqueued around Send can be),
// subject comes from WithCloudEventsSubject; specversion is "1.0". In binary mode the payload is
// the body, with the Sender's Content-Type (WithContentType) as
// datacontenttype; in structured mode the body is the event as JSON with
// Content-Type application/cloudevents+json, the payload inline as "data"
// when the content type is JSON and the payload is valid JSON, otherwise
// base64 as "data_base64". The Standard Webhooks headers still sign the
// exact body sent (in structured mode the JSON event), which is the same
// on every attempt.
//
// Binary-mode header values are percent-encoded as the HTTP binding
// (1.0.2) requires for space, '"', '%' and non-ASCII characters.
func WithCloudEvents(mode CloudEventsMode, source string) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if mode != CloudEventsBinary && mode != CloudEventsStructured {
			return optionErrorf("webhook: WithCloudEvents(%v, %q): mode must be CloudEventsBinary or CloudEventsStructured", mode, source)
		}
		if err := checkURIRef(source); err != nil {
			return optionErrorf("webhook: WithCloudEvents(%v, %q): source: %v", mode, source, err)
		}
		c.ce.mode, c.ce.source = mode, source
		return nil
	})
}

// WithCloudEventsSubject sets a function that gives each message's
// CloudEvents "subject" attribute (the entity the event is about, such as
// an invoice ID); an empty result leaves the attribute out. It is called
// on every attempt, from several goroutines at once, so it must be cheap,
// safe for concurrent use and give the same answer for the same message
// (in structured mode the signed body must not change between attempts). It needs WithCloudEvents; nil is refused.
func WithCloudEventsSubject(f func(Message) string) SenderOption {
	return senderOpt(func(c *senderConfig) error {
		if f == nil {
			return optionErrorf("webhook: WithCloudEventsSubject(nil)")
		}
		c.ce.subject = f
		return nil
	})
}

// WithUnsignedCloudEvents makes a Receiver accept CloudEvents without
// Standard Webhooks signatures, for producers that do not sign (Knative,
// Dapr, Event Grid, the CloudEvents SDKs): NewReceiver is then given a nil
// Verifier, and authenticating the sender is left to what is in front of
// the Receiver (mutual TLS, a private network, a gateway). Such a Receiver
// accepts only CloudEvents (anything else is answered 400 with
// ErrInvalidCloudEvent), ignores webhook-* headers, and deduplicates on the
// event's source and id together, which the CloudEvents specification makes
// unique; Event.ID is the CloudEvent's id and Event.Timestamp is zero.
//
// It cannot be combined with a Verifier: a Receiver that verified signed
// requests and also took unsigned CloudEvents would let anyone in by
// dropping the signature, so NewReceiver refuses the pair.
func WithUnsignedCloudEvents() ReceiverOption {
	return receiverOpt(func(c *receiverConfig) error { c.unsignedCE = true; return nil })
}

// checkURIRef checks a source attribute: non-empty and a URI-reference.
func checkURIRef(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if _, err := url.Parse(s); err != nil {
		return errors.New("not a URI-reference")
	}
	return nil
}

// isJSONMediaType reports whether ct is JSON: application/json, text/json
// or a +json suffix. Parameters (charset) are ignored.
func isJSONMediaType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// mediaType returns ct's media type, lowercase, without parameters.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// ceTime formats the time attribute: RFC 3339 in UTC, nanoseconds when any.
func ceTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// checkCloudEventMessage refuses a message that cannot be a CloudEvent.
func checkCloudEventMessage(m Message) error {
	if m.Type == "" {
		return invalidCE("type: Message.Type is empty")
	}
	return nil
}

// Binary-mode header names of the attributes a Sender writes.
const (
	headerCESpecVersion = "Ce-Specversion"
	headerCEID          = "Ce-Id"
	headerCESource      = "Ce-Source"
	headerCEType        = "Ce-Type"
	headerCETime        = "Ce-Time"
	headerCESubject     = "Ce-Subject"
)

// setBinaryHeaders sets the ce-* headers of a binary-mode request for m.
func (c *ceConfig) setBinaryHeaders(h http.Header, m Message) {
	h[headerCESpecVersion] = []string{CloudEventsSpecVersion}
	h[headerCEID] = []string{percentEncode(m.ID)}
	h[headerCESource] = []string{percentEncode(c.source)}
	h[headerCEType] = []string{percentEncode(m.Type)}
	if !m.Time.IsZero() {
		h[headerCETime] = []string{ceTime(m.Time)}
	}
	if c.subject != nil {
		if s := c.subject(m); s != "" {
			h[headerCESubject] = []string{percentEncode(s)}
		}
	}
}

// structuredBody returns m as a CloudEvent in the JSON event format with
// the payload of content type ct. The member order is fixed, so every
// attempt sends (and signs) the same bytes.
func (c *ceConfig) structuredBody(m Message, ct string) []byte {
	b := make([]byte, 0, 160+len(m.ID)+len(m.Type)+len(c.source)+len(m.Payload)*4/3)
	str := func(name, v string) {
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = appendJSONString(b, v)
	}
	b = append(b, `{"specversion":"1.0"`...)
	str("id", m.ID)
	str("source", c.source)
	str("type", m.Type)
	if !m.Time.IsZero() {
		str("time", ceTime(m.Time))
	}
	if c.subject != nil {
		if s := c.subject(m); s != "" {
			str("subject", s)
		}
	}
	str("datacontenttype", ct)
	switch {
	case len(m.Payload) == 0:
	case isJSONMediaType(ct) && json.Valid(m.Payload):
		b = append(b, `,"data":`...)
		b = append(b, bytes.TrimSpace(m.Payload)...)
	default:
		b = append(b, `,"data_base64":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Payload)
		b = append(b, '"')
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// percentEncode encodes a binary-mode header value as the HTTP binding
// requires: space, '"', '%' and every byte outside printable ASCII become
// %XY (upper case).
func percentEncode(s string) string {
	n := 0
	for i := 0; i < len(s); i++ {
		if needsPercent(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if c := s[i]; needsPercent(c) {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func needsPercent(c byte) bool { return c <= ' ' || c == '"' || c == '%' || c >= 0x7f }

// headerDecode undoes a binary-mode header value's encoding: a
// double-quoted string is unquoted first (older producers), then one round
// of percent-decoding; the result must be UTF-8.
func headerDecode(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		var b strings.Builder
		for i := 1; i < len(v)-1; i++ {
			if v[i] == '\\' && i+1 < len(v)-1 {
				i++
			}
			b.WriteByte(v[i])
		}
		v = b.String()
	}
	if strings.IndexByte(v, '%') >= 0 {
		b := make([]byte, 0, len(v))
		for i := 0; i < len(v); i++ {
			if v[i] != '%' {
				b = append(b, v[i])
				continue
			}
			if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
				return "", errors.New("bad percent-encoding")
			}
			b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
			i += 2
		}
		v = string(b)
	}
	if !utf8.ValidString(v) {
		return "", errors.New("not UTF-8")
	}
	return v, nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// validAttrName reports whether s can be a CloudEvents attribute name:
// lowercase ASCII letters and digits.
func validAttrName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

// isCloudEvent reports whether a request claims to be a CloudEvent: its
// Content-Type is a CloudEvents format (structured or batch), or it has a
// ce-specversion, ce-id, ce-source or ce-type header (binary; any one of
// them, so that a binary event missing specversion is refused by name
// rather than taken for a plain webhook).
func isCloudEvent(h http.Header) bool {
	if strings.HasPrefix(mediaType(headerValue(h, "Content-Type")), "application/cloudevents") {
		return true
	}
	// One pass with a cheap prefix test: a plain webhook pays little.
	for k, vs := range h {
		if len(vs) == 0 || vs[0] == "" || len(k) < 5 || k[0]|0x20 != 'c' || k[1]|0x20 != 'e' || k[2] != '-' {
			continue
		}
		switch n := k[3:]; {
		case strings.EqualFold(n, "specversion"), strings.EqualFold(n, "id"),
			strings.EqualFold(n, "source"), strings.EqualFold(n, "type"):
			return true
		}
	}
	return false
}

// parseCloudEvent reads the CloudEvent of a request that isCloudEvent.
func parseCloudEvent(h http.Header, body []byte) (*CloudEvent, error) {
	ct := headerValue(h, "Content-Type")
	switch mt := mediaType(ct); {
	case mt == ContentTypeCloudEventsJSON:
		return parseStructured(body)
	case mt == ContentTypeCloudEventsBatchJSON:
		return nil, invalidCE("batched content mode (%s) is not supported", mt)
	case strings.HasPrefix(mt, "application/cloudevents"):
		return nil, invalidCE("event format %q is not supported (only %s)", mt, ContentTypeCloudEventsJSON)
	}
	return parseBinary(h, ct, body)
}

func parseBinary(h http.Header, ct string, body []byte) (*CloudEvent, error) {
	e := &CloudEvent{Mode: CloudEventsBinary, DataContentType: ct}
	if len(body) > 0 {
		e.Data = body
	}
	for k, vs := range h {
		if len(vs) == 0 || len(k) <= 3 || !strings.EqualFold(k[:3], "ce-") {
			continue
		}
		name := strings.ToLower(k[3:])
		if !validAttrName(name) {
			continue
		}
		v, err := headerDecode(vs[0])
		if err != nil {
			return nil, invalidCE("header ce-%s: %v", name, err)
		}
		switch name {
		case "specversion":
			e.SpecVersion = v
		case "id":
			e.ID = v
		case "source":
			e.Source = v
		case "type":
			e.Type = v
		case "subject":
			e.Subject = v
		case "dataschema":
			e.DataSchema = v
		case "datacontenttype":
			// Content-Type carries it in binary mode; the header must
			// not be there, and if it is, Content-Type wins.
			if e.DataContentType == "" {
				e.DataContentType = v
			}
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return nil, invalidCE("time %q is not an RFC 3339 timestamp", truncate(v, 64))
			}
			e.Time = t
		default:
			if e.Extensions == nil {
				e.Extensions = make(map[string]string)
			}
			e.Extensions[name] = v
		}
	}
	return e, e.checkRequired("header ce-")
}

// checkRequired checks specversion, id, source and type; prefix says where
// they come from ("header ce-" or "attribute ").
func (e *CloudEvent) checkRequired(prefix string) error {
	switch {
	case e.SpecVersion == "":
		return invalidCE("%sspecversion is missing", prefix)
	case e.SpecVersion != CloudEventsSpecVersion:
		return invalidCE("%sspecversion %q is not supported (only %s)", prefix, truncate(e.SpecVersion, 16), CloudEventsSpecVersion)
	case e.ID == "":
		return invalidCE("%sid is missing or empty", prefix)
	case e.Source == "":
		return invalidCE("%ssource is missing or empty", prefix)
	case e.Type == "":
		return invalidCE("%stype is missing or empty", prefix)
	}
	if err := checkURIRef(e.Source); err != nil {
		return invalidCE("%ssource %q: %v", prefix, truncate(e.Source, 64), err)
	}
	return nil
}

func parseStructured(body []byte) (*CloudEvent, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, invalidCE("structured body is not a JSON object: %v", err)
	}
	e := &CloudEvent{Mode: CloudEventsStructured}
	str := func(name string) (string, error) {
		raw, ok := members[name]
		if !ok || string(raw) == "null" {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", invalidCE("attribute %s is not a string", name)
		}
		return s, nil
	}
	var err error
	for _, f := range []struct {
		name string
		dst  *string
	}{{"specversion", &e.SpecVersion}, {"id", &e.ID}, {"source", &e.Source}, {"type", &e.Type},
		{"subject", &e.Subject}, {"datacontenttype", &e.DataContentType}, {"dataschema", &e.DataSchema}} {
		if *f.dst, err = str(f.name); err != nil {
			return nil, err
		}
	}
	if err := e.checkRequired("attribute "); err != nil {
		return nil, err
	}
	ts, err := str("time")
	if err != nil {
		return nil, err
	}
	if ts != "" {
		if e.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			return nil, invalidCE("attribute time %q is not an RFC 3339 timestamp", truncate(ts, 64))
		}
	}
	data, hasData := members["data"]
	b64, hasB64 := members["data_base64"]
	if hasData && string(data) == "null" {
		hasData = false
	}
	if hasB64 && string(b64) == "null" {
		hasB64 = false
	}
	switch {
	case hasData && hasB64:
		return nil, invalidCE("both data and data_base64 are present")
	case hasB64:
		var s string
		if err := json.Unmarshal(b64, &s); err != nil {
			return nil, invalidCE("data_base64 is not a string")
		}
		if e.Data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return nil, invalidCE("data_base64: %v", err)
		}
	case hasData:
		e.Data = []byte(data)
		// A JSON string is the data itself when the data is not JSON
		// (text/plain, say); JSON data is kept as JSON.
		if e.DataContentType != "" && !isJSONMediaType(e.DataContentType) && len(data) > 0 && data[0] == '"' {
			var s string
			if err := json.Unmarshal(data, &s); err == nil {
				e.Data = []byte(s)
			}
		}
	}
	for name, raw := range members {
		switch name {
		case "specversion", "id", "source", "type", "subject", "datacontenttype", "dataschema", "time", "data", "data_base64":
			continue
		}
		if !validAttrName(name) || string(raw) == "null" {
			continue
		}
		v, err := extensionValue(raw)
		if err != nil {
			return nil, invalidCE("attribute %s: %v", name, err)
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string)
		}
		e.Extensions[name] = v
	}
	return e, nil
}

// extensionValue gives a JSON extension attribute's canonical string form.
func extensionValue(raw json.RawMessage) (string, error) {
	switch raw[0] {
	case '"':
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", err
		}
		return strconv.FormatBool(b), nil
	case '{', '[':
		return "", errors.New("an object or array is not a CloudEvents attribute type")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", err
	}
	i, err := n.Int64()
	if err != nil || i < -1<<31 || i >= 1<<31 {
		return "", fmt.Errorf("number %s is not a 32-bit integer", truncate(string(n), 32))
	}
	return strconv.FormatInt(i, 10), nil
}

// dedupKey is the key an unsigned CloudEvent is deduplicated on: source
// and id, quoted so that no two pairs give the same key.
func (e *CloudEvent) dedupKey() string { return strconv.Quote(e.Source) + " " + e.ID }
