package event

import (
	"fmt"
	"maps"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"
)

// Registry knows the event types a service publishes and handles: for each,
// its CloudEvents type name, Go type, version, codec and upcasters. Register
// types at start-up; a Registry is safe for concurrent use, registration
// included (lookups never lock).
type Registry struct {
	env   envelope
	codec Codec

	mu    sync.Mutex // serialises Register
	types atomic.Pointer[typeTable]
}

// typeTable is replaced, never changed, so lookups need no lock.
type typeTable struct {
	byGo   map[reflect.Type]*entry
	byName map[string]*entry
}

// entry is one registered type.
type entry struct {
	info        TypeInfo
	codec       Codec
	contentType string
	versionStr  string
	upcasters   []Upcaster // index: from version; nil where none
}

// NewRegistry returns an empty Registry. Options: WithCodec (default JSON),
// WithSource (the CloudEvents source of what it encodes), WithHeaders
// (default KafkaHeaders), WithMode (default Binary).
func NewRegistry(opts ...Option) (*Registry, error) {
	c := registryConfig{env: envelope{headers: KafkaHeaders}, codec: JSON}
	for _, o := range opts {
		if o == nil {
			invalid(&c.errs, "nil Option")
			continue
		}
		o.applyRegistry(&c)
	}
	if len(c.errs) > 0 {
		return nil, joinErrs(c.errs)
	}
	r := &Registry{env: c.env, codec: c.codec}
	r.types.Store(&typeTable{byGo: map[reflect.Type]*entry{}, byName: map[string]*entry{}})
	return r, nil
}

// Register adds Go type T under the CloudEvents type name (reverse-DNS by
// convention: "com.example.order.placed"). A name and a Go type are
// registered once each. T must not be an interface type. Options:
// WithVersion, WithUpcaster, WithCodec, WithSchema.
func Register[T any](r *Registry, name string, opts ...TypeOption) error {
	gt := reflect.TypeFor[T]()
	c := typeConfig{version: 1, codec: r.codec}
	if err := checkTypeName(name); err != nil {
		c.errs = append(c.errs, err)
	}
	if gt.Kind() == reflect.Interface {
		invalid(&c.errs, "Register[%v]: an interface type cannot be decoded into", gt)
	}
	for _, o := range opts {
		if o == nil {
			invalid(&c.errs, "nil TypeOption")
			continue
		}
		o.applyType(&c)
	}
	for from := range c.upcasters {
		if from >= c.version {
			invalid(&c.errs, "WithUpcaster(%d): must be below WithVersion(%d)", from, c.version)
		}
	}
	if len(c.errs) > 0 {
		return fmt.Errorf("event: Register %q: %w", name, joinErrs(c.errs))
	}
	e := &entry{
		info:        TypeInfo{Name: name, Version: c.version, Schema: c.schema, GoType: gt},
		codec:       c.codec,
		contentType: c.codec.ContentType(),
		versionStr:  strconv.Itoa(c.version),
	}
	if len(c.upcasters) > 0 {
		e.upcasters = make([]Upcaster, c.version)
		for from, f := range c.upcasters {
			e.upcasters[from] = f
		}
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.types.Load()
	if prev, ok := old.byName[name]; ok {
		return fmt.Errorf("%w: type name %q (as %v)", ErrAlreadyRegistered, name, prev.info.GoType)
	}
	if prev, ok := old.byGo[gt]; ok {
		return fmt.Errorf("%w: Go type %v (as %q)", ErrAlreadyRegistered, gt, prev.info.Name)
	}
	t := &typeTable{byGo: maps.Clone(old.byGo), byName: maps.Clone(old.byName)}
	t.byGo[gt] = e
	t.byName[name] = e
	r.types.Store(t)
	return nil
}

// checkTypeName refuses names that cannot travel in every binding's headers.
func checkTypeName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty type name", ErrInvalidOption)
	case len(name) > 255:
		return fmt.Errorf("%w: type name is %d bytes, over 255", ErrInvalidOption, len(name))
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: type name %q is not UTF-8", ErrInvalidOption, name)
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: type name %q contains white space or a control character", ErrInvalidOption, name)
		}
	}
	return nil
}

// Types returns what is registered, in no particular order.
func (r *Registry) Types() []TypeInfo {
	t := r.types.Load()
	out := make([]TypeInfo, 0, len(t.byName))
	for _, e := range t.byName {
		out = append(out, e.info)
	}
	return out
}

// Lookup returns the registered type named name.
func (r *Registry) Lookup(name string) (TypeInfo, bool) {
	e, ok := r.types.Load().byName[name]
	if !ok {
		return TypeInfo{}, false
	}
	return e.info, true
}

func (r *Registry) byGo(t reflect.Type) *entry { return r.types.Load().byGo[t] }
