package event

import "strings"

// CloudEvents attribute names used by this package. DataVersionAttribute is
// this package's extension attribute; the others are core attributes of
// CloudEvents 1.0.
const (
	AttrSpecVersion     = "specversion"
	AttrID              = "id"
	AttrSource          = "source"
	AttrType            = "type"
	AttrTime            = "time"
	AttrSubject         = "subject"
	AttrDataContentType = "datacontenttype"
	AttrDataSchema      = "dataschema"
	// DataVersionAttribute carries the event type's version (WithVersion) as
	// a positive decimal integer. The name follows Azure Event Grid's
	// dataVersion: the version describes data, not the envelope, and
	// CloudEvents reserves no attribute for it (dataschema is a URI).
	DataVersionAttribute = "dataversion"
)

// SpecVersion is the CloudEvents version this package writes and reads.
const SpecVersion = "1.0"

// StructuredContentType is the content type of a structured-mode message: the
// whole CloudEvent as JSON in the payload (the JSON event format).
const StructuredContentType = "application/cloudevents+json; charset=UTF-8"

// Headers is a header-name scheme: how CloudEvents attributes are named in
// broker.Message.Header in binary content mode. Each attribute is the scheme's
// prefix plus its name, except datacontenttype, which travels in the
// content-type header (as every binding puts it in the protocol's own
// content type: the RabbitMQ adapter maps that header to the AMQP
// content-type property, and Kafka carries it as a "content-type" record
// header).
//
// The Router reads every scheme this package knows, so producers may choose
// theirs per Registry or per call (WithHeaders).
type Headers struct {
	prefix, contentType string

	id, source, specversion, typ, time, subject, dataschema, dataversion string
}

func newHeaders(prefix, contentType string) Headers {
	return Headers{
		prefix:      prefix,
		contentType: contentType,
		id:          prefix + AttrID,
		source:      prefix + AttrSource,
		specversion: prefix + AttrSpecVersion,
		typ:         prefix + AttrType,
		time:        prefix + AttrTime,
		subject:     prefix + AttrSubject,
		dataschema:  prefix + AttrDataSchema,
		dataversion: prefix + DataVersionAttribute,
	}
}

// Header-name schemes.
var (
	// KafkaHeaders is the CloudEvents Kafka protocol binding: "ce_id",
	// "ce_type", ... and "content-type". It is the default on every broker:
	// its names are valid Kafka, AMQP 0-9-1 and memory-broker header names, so
	// a message keeps its attributes when relayed from one broker to another.
	KafkaHeaders = newHeaders("ce_", "content-type")
	// AMQPHeaders is the CloudEvents AMQP protocol binding: "cloudEvents:id",
	// "cloudEvents:type", ... and the AMQP content-type property. Use it on
	// RabbitMQ when AMQP 1.0 consumers (RabbitMQ 4 maps AMQP 0-9-1 headers to
	// AMQP 1.0 application-properties) read the events with a CloudEvents SDK.
	// The Router also reads the "cloudEvents_" prefix the binding allows.
	AMQPHeaders = newHeaders("cloudEvents:", "content-type")

	amqpUnderscore = newHeaders("cloudEvents_", "content-type")
	readSchemes    = [...]*Headers{&KafkaHeaders, &AMQPHeaders, &amqpUnderscore}
)

// Prefix returns the prefix of the scheme's attribute headers ("ce_").
func (h Headers) Prefix() string { return h.prefix }

// ContentType returns the header that carries datacontenttype ("content-type").
func (h Headers) ContentType() string { return h.contentType }

// Name returns the header that carries attribute attr (Name("type") is
// "ce_type"); for "datacontenttype" it returns ContentType().
func (h Headers) Name(attr string) string {
	if attr == AttrDataContentType {
		return h.contentType
	}
	return h.prefix + attr
}

func (h Headers) valid() bool { return h.prefix != "" }

// coreAttribute reports names this package reads into Event fields; other
// attributes are extensions.
func coreAttribute(name string) bool {
	switch name {
	case AttrSpecVersion, AttrID, AttrSource, AttrType, AttrTime, AttrSubject,
		AttrDataContentType, AttrDataSchema, DataVersionAttribute:
		return true
	}
	return false
}

// validExtensionName checks the CloudEvents naming rule: lower-case ASCII
// letters and digits, at most 20 characters.
func validExtensionName(name string) bool {
	if name == "" || len(name) > 20 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// mediaType returns ct without parameters, lower-cased.
func mediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	ct = strings.TrimSpace(ct)
	for i := 0; i < len(ct); i++ {
		if c := ct[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(ct)
		}
	}
	return ct
}

// isJSON reports a JSON media type: application/json, text/json or a +json suffix.
func isJSON(ct string) bool {
	mt := mediaType(ct)
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// cloudEventsMedia is the prefix of both CloudEvents JSON media types; a
// content type without it (the usual case) is settled without parsing.
const cloudEventsMedia = "application/cloudevents"

func maybeCloudEvents(ct string) bool {
	return len(ct) >= len(cloudEventsMedia) && strings.EqualFold(ct[:len(cloudEventsMedia)], cloudEventsMedia)
}

func isStructured(ct string) bool {
	return maybeCloudEvents(ct) && mediaType(ct) == "application/cloudevents+json"
}

func isBatch(ct string) bool {
	return maybeCloudEvents(ct) && mediaType(ct) == "application/cloudevents-batch+json"
}

// sameMedia reports whether two content types have one media type.
func sameMedia(a, b string) bool {
	return a == b || mediaType(a) == mediaType(b)
}
