package event

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-integration/patterns/broker"
)

// attributes are a received event's CloudEvents attributes and data.
type attributes struct {
	specversion, id, source, typ, subject, timeStr, contentType, dataschema string
	version                                                                 int
	at                                                                      time.Time
	ext                                                                     map[string]string
	data                                                                    []byte
}

// missing names a required attribute by the header (or JSON member) it was
// looked for in.
func missing(name string) error {
	return broker.Permanent(fmt.Errorf("%w: %s", ErrMissingAttribute, name))
}

func badAttr(name, value, why string) error {
	if len(value) > 64 {
		value = value[:64] + "…"
	}
	return broker.Permanent(fmt.Errorf("%w: %s %q: %s", ErrInvalidAttribute, name, value, why))
}

// readAttributes reads m in the content mode it was sent in: structured when
// its content type is the JSON event format, else binary under whichever
// known header scheme carries a type (pref first).
func readAttributes(m *broker.Message, pref *Headers, a *attributes) error {
	ct := m.Header[pref.contentType]
	switch {
	case isStructured(ct):
		return readStructured(m.Payload, a)
	case isBatch(ct):
		return broker.Permanent(fmt.Errorf("%w: batch mode (%s) is not supported", ErrDecode, ct))
	}
	h := pref
	typ, ok := m.Header[h.typ]
	if !ok {
		for _, s := range readSchemes {
			if s.prefix != pref.prefix {
				if typ, ok = m.Header[s.typ]; ok {
					h = s
					break
				}
			}
		}
		if !ok {
			return missing(pref.typ)
		}
	}
	if typ == "" {
		return missing(h.typ)
	}
	a.typ = typ
	a.contentType = ct // every scheme names it alike
	a.data = m.Payload
	a.version = 1 // an event without dataversion is version 1
	// One pass over the headers rather than a lookup per attribute: it is
	// cheaper for the usual seven and finds the extensions on the way.
	var have uint8
	const haveSpec, haveID, haveSource = 1, 2, 4
	for k, v := range m.Header {
		if len(k) <= len(h.prefix) || k[:len(h.prefix)] != h.prefix {
			continue
		}
		switch name := k[len(h.prefix):]; name {
		case AttrSpecVersion:
			a.specversion, have = v, have|haveSpec
		case AttrID:
			if v != "" {
				a.id, have = v, have|haveID
			}
		case AttrSource:
			if v != "" {
				a.source, have = v, have|haveSource
			}
		case AttrType:
		case AttrSubject:
			a.subject = v
		case AttrTime:
			a.timeStr = v
		case AttrDataSchema:
			a.dataschema = v
		case DataVersionAttribute:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return badAttr(k, v, "not a positive integer")
			}
			a.version = n
		default:
			if a.ext == nil {
				a.ext = make(map[string]string)
			}
			a.ext[name] = v
		}
	}
	switch {
	case have&haveSpec == 0:
		return missing(h.specversion)
	case have&haveID == 0:
		return missing(h.id)
	case have&haveSource == 0:
		return missing(h.source)
	}
	return checkCommon(a, h.specversion, h.time)
}

// checkCommon checks what both modes share.
func checkCommon(a *attributes, specName, timeName string) error {
	if a.specversion != SpecVersion {
		return badAttr(specName, a.specversion, "this package reads CloudEvents "+SpecVersion)
	}
	if a.typ == "" {
		return missing(AttrType)
	}
	if a.timeStr != "" {
		t, err := time.Parse(time.RFC3339Nano, a.timeStr)
		if err != nil {
			return badAttr(timeName, a.timeStr, "not an RFC 3339 time")
		}
		a.at = t
	}
	return nil
}

// readStructured parses the JSON event format.
func readStructured(payload []byte, a *attributes) error {
	var doc map[string]json.RawMessage
	d := json.NewDecoder(bytes.NewReader(payload))
	if err := d.Decode(&doc); err != nil || doc == nil {
		if err == nil {
			err = fmt.Errorf("not a JSON object")
		}
		return broker.Permanent(fmt.Errorf("%w: structured CloudEvent: %v", ErrDecode, err))
	}
	str := func(name string, required bool) (string, error) {
		raw, ok := doc[name]
		if !ok || string(raw) == "null" {
			if required {
				return "", missing(name)
			}
			return "", nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", badAttr(name, string(raw), "not a JSON string")
		}
		if required && s == "" {
			return "", missing(name)
		}
		return s, nil
	}
	var err error
	if a.specversion, err = str(AttrSpecVersion, true); err != nil {
		return err
	}
	if a.typ, err = str(AttrType, true); err != nil {
		return err
	}
	if a.id, err = str(AttrID, true); err != nil {
		return err
	}
	if a.source, err = str(AttrSource, true); err != nil {
		return err
	}
	if a.subject, err = str(AttrSubject, false); err != nil {
		return err
	}
	if a.timeStr, err = str(AttrTime, false); err != nil {
		return err
	}
	if a.dataschema, err = str(AttrDataSchema, false); err != nil {
		return err
	}
	if a.contentType, err = str(AttrDataContentType, false); err != nil {
		return err
	}
	a.version = 1
	if raw, ok := doc[DataVersionAttribute]; ok {
		// An Integer, or its canonical string form.
		s := strings.Trim(string(raw), `"`)
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return badAttr(DataVersionAttribute, string(raw), "not a positive integer")
		}
		a.version = n
	}
	for k, raw := range doc {
		if coreAttribute(k) || k == "data" || k == "data_base64" {
			continue
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			continue
		}
		if a.ext == nil {
			a.ext = make(map[string]string)
		}
		if s, ok := v.(string); ok {
			a.ext[k] = s
		} else {
			a.ext[k] = string(raw) // numbers and booleans in their JSON form
		}
	}
	if raw, ok := doc["data_base64"]; ok {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return broker.Permanent(fmt.Errorf("%w: data_base64 is not a JSON string", ErrDecode))
		}
		if a.data, err = base64.StdEncoding.DecodeString(s); err != nil {
			return broker.Permanent(fmt.Errorf("%w: data_base64: %v", ErrDecode, err))
		}
	} else if raw, ok := doc["data"]; ok {
		// JSON data is the value itself; other data travels as a JSON string.
		if a.contentType == "" || isJSON(a.contentType) {
			a.data = raw
		} else {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return broker.Permanent(fmt.Errorf("%w: data of %s is not a JSON string", ErrDecode, a.contentType))
			}
			a.data = []byte(s)
		}
	}
	if a.contentType == "" {
		a.contentType = "application/json" // the JSON format's default
	}
	return checkCommon(a, AttrSpecVersion, AttrTime)
}
