package event

import "errors"

// Errors of this package; test them with errors.Is. The Router wraps the ones
// about a received message (ErrDecode, ErrMissingAttribute,
// ErrInvalidAttribute, ErrUnknownType, ErrVersion, ErrUpcast) in
// broker.Permanent, so the message is dead-lettered at once with the reason in
// its broker.HeaderError header; an error wrapping ErrUnavailable is left
// transient, so the message is retried.
var (
	// ErrInvalidOption is returned (wrapped) by NewRegistry, Register,
	// NewRouter, Encode and Publish for a bad option or argument; the error
	// names the option.
	ErrInvalidOption = errors.New("event: invalid option")
	// ErrNotRegistered is returned by Encode, Publish and Handle for a Go type
	// that was not registered with the Registry.
	ErrNotRegistered = errors.New("event: type not registered")
	// ErrAlreadyRegistered is returned by Register for a name or Go type
	// registered before, and by Handle for a type that already has a handler.
	ErrAlreadyRegistered = errors.New("event: already registered")
	// ErrEncode is returned by Encode and Publish when the codec cannot
	// marshal the value.
	ErrEncode = errors.New("event: cannot encode")
	// ErrDecode is a received payload the codec cannot unmarshal, a
	// structured envelope that is not a CloudEvent in JSON, or a
	// datacontenttype the type's codec does not read.
	ErrDecode = errors.New("event: cannot decode")
	// ErrMissingAttribute is a received message without a required CloudEvents
	// attribute (specversion, id, source, type); the error names the header.
	ErrMissingAttribute = errors.New("event: missing CloudEvents attribute")
	// ErrInvalidAttribute is an attribute that does not parse: a specversion
	// other than 1.0, a time that is not RFC 3339, a dataversion that is not
	// a positive integer.
	ErrInvalidAttribute = errors.New("event: invalid CloudEvents attribute")
	// ErrUnknownType is a received type the Router has no handler for, when
	// its unknown policy is DeadLetter.
	ErrUnknownType = errors.New("event: unknown event type")
	// ErrVersion is a received dataversion the Router cannot turn into the
	// registered one: newer than registered, or older with no upcaster chain.
	ErrVersion = errors.New("event: unsupported event version")
	// ErrUpcast is an upcaster that failed on a received payload.
	ErrUpcast = errors.New("event: upcast failed")
	// ErrUnavailable is what a Codec or an Upcaster wraps when a dependency
	// it needs (a schema registry) is down: the error is transient, so Publish
	// fails and may be retried, and a received message is retried by the
	// subscription instead of being dead-lettered.
	ErrUnavailable = errors.New("event: dependency unavailable")
)
