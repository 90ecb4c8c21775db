package tracing

// Gate decides, before a call, whether an adapter's tracers of one kind
// must be called: not when there are none, nor when every one implements
// the enabler interface E (broker.PublishTraceEnabler or
// broker.ProcessTraceEnabler) and reports false. The type assertions are
// made once, in NewGate, so that asking costs only the enablers' calls.
type Gate[E any] struct {
	always bool // a tracer is not an enabler: always call them all
	es     []E  // every tracer, as an enabler
}

// NewGate returns the Gate of tracers ts.
func NewGate[E any, T any](ts []T) Gate[E] {
	g := Gate[E]{}
	for _, t := range ts {
		e, ok := any(t).(E)
		if !ok {
			return Gate[E]{always: true}
		}
		g.es = append(g.es, e)
	}
	return g
}

// Enabled reports whether the tracers must be called: ask calls one
// enabler's method.
func (g *Gate[E]) Enabled(ask func(E) bool) bool {
	if g.always {
		return true
	}
	for _, e := range g.es {
		if ask(e) {
			return true
		}
	}
	return false
}
