package telemetry

import (
	"net/http"
	"strings"
)

// Limits on W3C trace context in headers, received and sent. The W3C
// specifications ask every hop to carry at least 512 bytes of tracestate
// and up to 8192 bytes and 64 list-members of baggage, and OpenTelemetry
// receivers ignore a baggage over 8192 bytes whole: capping what we send
// keeps every message's headers within what any broker and any receiver
// takes, whatever the caller's context holds.
const (
	traceparentLen    = 55   // the version 00 form
	maxTracestateLen  = 512  // bytes, W3C Trace Context "at least 512"
	maxTracestateItem = 128  // members longer than this are dropped first (W3C)
	maxBaggageLen     = 8192 // bytes, W3C Baggage
	maxBaggageMembers = 64   // W3C Baggage; OpenTelemetry's parser keeps no more
)

// inbound returns v, the received value of header key, or "" when it is a
// traceparent, tracestate or baggage outside the limits: a malformed or
// oversized header from outside starts a new root span (or keeps the
// parent without the tracestate or baggage) instead of being parsed or
// passed on. Every carrier that reads received headers (brokerCarrier,
// inboundCarrier) goes through it.
func inbound(key, v string) string {
	switch key {
	case "traceparent":
		if len(v) != traceparentLen {
			return ""
		}
	case "tracestate":
		if len(v) > maxTracestateLen {
			return ""
		}
	case "baggage":
		// Parsed, it would fail whole (and reach otel's error handler).
		if len(v) > maxBaggageLen {
			return ""
		}
	}
	return v
}

// outbound returns v, the value the propagator writes into header key, cut
// to the limits by dropping whole list-members: a tracestate to 512 bytes
// (members over 128 bytes first, then from the end, as W3C Trace Context
// says), a baggage to 8192 bytes and 64 members (from the end). "" means
// nothing is left to send. Every carrier the propagator writes into
// (brokerCarrier, headerCarrier) goes through it.
func outbound(key, v string) string {
	switch key {
	case "tracestate":
		if len(v) > maxTracestateLen {
			return capList(v, maxTracestateLen, 0, maxTracestateItem)
		}
	case "baggage":
		// A member count within the limit needs no split: count commas
		// only when there can be too many members.
		if len(v) > maxBaggageLen || (len(v) >= 2*maxBaggageMembers && strings.Count(v, ",") >= maxBaggageMembers) {
			return capList(v, maxBaggageLen, maxBaggageMembers, 0)
		}
	}
	return v
}

// capList returns the comma-separated list v with whole members dropped
// until it is at most maxLen bytes and, when maxMembers > 0, has at most
// maxMembers members. With bigFirst > 0 members longer than bigFirst are
// dropped first, from the end; then members are dropped from the end.
// Members lose the optional white space around them and empty members are
// left out, which only shortens the list.
func capList(v string, maxLen, maxMembers, bigFirst int) string {
	members := make([]string, 0, strings.Count(v, ",")+1)
	total := -1 // the commas between members
	for m := range strings.SplitSeq(v, ",") {
		if m = strings.Trim(m, " \t"); m != "" {
			members = append(members, m)
			total += len(m) + 1
		}
	}
	if bigFirst > 0 {
		for i := len(members) - 1; i >= 0 && total > maxLen; i-- {
			if len(members[i]) > bigFirst {
				total -= len(members[i]) + 1
				members = append(members[:i], members[i+1:]...)
			}
		}
	}
	for len(members) > 0 && (total > maxLen || (maxMembers > 0 && len(members) > maxMembers)) {
		total -= len(members[len(members)-1]) + 1
		members = members[:len(members)-1]
	}
	return strings.Join(members, ",")
}

// headerCarrier is an http.Header as a propagation.TextMapCarrier that
// caps what the propagator writes (outbound) and hides what it must not
// read (inbound).
type headerCarrier http.Header

// Get returns the header's first value for key, "" for an invalid
// traceparent, tracestate or baggage.
func (c headerCarrier) Get(key string) string { return inbound(key, http.Header(c).Get(key)) }

// Set sets the header key to value cut to the limits, or removes it when
// nothing is left.
func (c headerCarrier) Set(key, value string) {
	if v := outbound(key, value); v != "" {
		http.Header(c).Set(key, v)
	} else {
		http.Header(c).Del(key)
	}
}

// Keys lists the header's keys.
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
