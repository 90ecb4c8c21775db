package testpb_test

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/go-integration/patterns/event/protobuf/testpb"
)

// TestProtoMatchesGenerated renders the generated file's descriptor as
// .proto text and compares it with order.proto, comments and layout left
// out: order.pb.go is generated from a hand-built descriptor, so this is what
// keeps the two, and the schema registered from order.proto, the same.
func TestProtoMatchesGenerated(t *testing.T) {
	fd := testpb.File_event_protobuf_testpb_order_proto
	var b strings.Builder
	fmt.Fprintf(&b, "syntax = %q;\npackage %s;\n", fd.Syntax().String(), fd.Package())
	fmt.Fprintf(&b, "option go_package = %q;\n", "github.com/go-integration/patterns/event/protobuf/testpb")
	var message func(md protoreflect.MessageDescriptor)
	message = func(md protoreflect.MessageDescriptor) {
		fmt.Fprintf(&b, "message %s {\n", md.Name())
		for i := range md.Messages().Len() {
			message(md.Messages().Get(i))
		}
		for i := range md.Fields().Len() {
			f := md.Fields().Get(i)
			typ := f.Kind().String()
			if f.Kind() == protoreflect.MessageKind {
				typ = string(f.Message().Name())
			}
			if f.Cardinality() == protoreflect.Repeated {
				typ = "repeated " + typ
			}
			fmt.Fprintf(&b, "%s %s = %d;\n", typ, f.Name(), f.Number())
		}
		b.WriteString("}\n")
	}
	for i := range fd.Messages().Len() {
		message(fd.Messages().Get(i))
	}
	var src []string
	for _, l := range strings.Split(testpb.OrderProto, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "//") {
			src = append(src, l)
		}
	}
	if got, want := strings.TrimSpace(b.String()), strings.Join(src, "\n"); got != want {
		t.Errorf("order.pb.go's descriptor:\n%s\n\norder.proto:\n%s", got, want)
	}
}
