package cdc

import (
	"encoding/binary"
	"fmt"
)

// rowChange is a decoded pgoutput Insert ('I'), Update ('U') or Delete
// ('D') message. pglogrepl decodes them too, with an allocation per
// column; these are most of the stream, so the source reads them itself,
// its columns pointing into the message's buffer.
type rowChange struct {
	op       byte // 'I', 'U' or 'D'
	relation uint32
	oldKind  byte       // 0: no old tuple; 'K' key columns; 'O' whole row
	old      []tupleCol // nil when oldKind is 0
	new      []tupleCol // nil for deletes
}

// parseRow decodes src, a message whose first byte is 'I', 'U' or 'D'.
func parseRow(src []byte) (*rowChange, error) {
	r := &rowChange{op: src[0]}
	if len(src) < 6 {
		return nil, fmt.Errorf("cdc: %c message of %d bytes", src[0], len(src))
	}
	r.relation = binary.BigEndian.Uint32(src[1:5])
	p := src[5:]
	var err error
	switch r.op {
	case 'I':
		if p[0] != 'N' {
			return nil, fmt.Errorf("cdc: insert: tuple kind %q", p[0])
		}
		r.new, p, err = parseTuple(p[1:])
	case 'U':
		if p[0] == 'K' || p[0] == 'O' {
			r.oldKind = p[0]
			if r.old, p, err = parseTuple(p[1:]); err != nil {
				return nil, err
			}
			if len(p) == 0 {
				return nil, fmt.Errorf("cdc: update without a new tuple")
			}
		}
		if p[0] != 'N' {
			return nil, fmt.Errorf("cdc: update: tuple kind %q", p[0])
		}
		r.new, p, err = parseTuple(p[1:])
	case 'D':
		if p[0] != 'K' && p[0] != 'O' {
			return nil, fmt.Errorf("cdc: delete: tuple kind %q", p[0])
		}
		r.oldKind = p[0]
		r.old, p, err = parseTuple(p[1:])
	}
	if err != nil {
		return nil, err
	}
	if len(p) != 0 {
		return nil, fmt.Errorf("cdc: %c message: %d bytes left over", r.op, len(p))
	}
	return r, nil
}

// parseTuple decodes TupleData: Int16 columns, then per column a kind ('n'
// null, 'u' unchanged TOAST, 't' text or 'b' binary, the last two followed
// by Int32 length and the bytes).
func parseTuple(p []byte) ([]tupleCol, []byte, error) {
	if len(p) < 2 {
		return nil, nil, fmt.Errorf("cdc: truncated tuple")
	}
	n := int(binary.BigEndian.Uint16(p))
	p = p[2:]
	cols := make([]tupleCol, n)
	for i := range cols {
		if len(p) < 1 {
			return nil, nil, fmt.Errorf("cdc: truncated tuple at column %d", i)
		}
		kind := p[0]
		p = p[1:]
		cols[i].kind = kind
		switch kind {
		case 'n', 'u':
		case 't', 'b':
			if len(p) < 4 {
				return nil, nil, fmt.Errorf("cdc: truncated tuple at column %d", i)
			}
			l := int(binary.BigEndian.Uint32(p))
			p = p[4:]
			if l > len(p) {
				return nil, nil, fmt.Errorf("cdc: truncated value at column %d", i)
			}
			cols[i].data = p[:l:l]
			p = p[l:]
		default:
			return nil, nil, fmt.Errorf("cdc: column %d: kind %q", i, kind)
		}
	}
	return cols, p, nil
}
