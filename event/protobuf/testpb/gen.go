//go:build ignore

// gen writes order.pb.go with protoc-gen-go's own generator, from a
// descriptor built here that mirrors order.proto, so no protoc is needed.
package main

import (
	"log"
	"os"

	"google.golang.org/protobuf/cmd/protoc-gen-go/internal_gengo"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

func field(name string, n int32, t descriptorpb.FieldDescriptorProto_Type, repeated bool, typeName string) *descriptorpb.FieldDescriptorProto {
	label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
	if repeated {
		label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	}
	f := &descriptorpb.FieldDescriptorProto{
		Name: proto.String(name), Number: proto.Int32(n), Type: t.Enum(), Label: label.Enum(),
		JsonName: proto.String(name),
	}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

func main() {
	const (
		str = descriptorpb.FieldDescriptorProto_TYPE_STRING
		i64 = descriptorpb.FieldDescriptorProto_TYPE_INT64
		i32 = descriptorpb.FieldDescriptorProto_TYPE_INT32
		dbl = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		msg = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("event/protobuf/testpb/order.proto"),
		Package: proto.String("patterns.event.testpb"),
		Syntax:  proto.String("proto3"),
		Options: &descriptorpb.FileOptions{GoPackage: proto.String("github.com/go-integration/patterns/event/protobuf/testpb")},
		MessageType: []*descriptorpb.DescriptorProto{
			{
				Name: proto.String("OrderPlaced"),
				Field: []*descriptorpb.FieldDescriptorProto{
					field("order", 1, str, false, ""),
					field("seq", 2, i64, false, ""),
					field("items", 3, str, true, ""),
					field("total", 4, dbl, false, ""),
				},
			},
			{
				Name: proto.String("OrderShipped"),
				NestedType: []*descriptorpb.DescriptorProto{{
					Name: proto.String("Parcel"),
					Field: []*descriptorpb.FieldDescriptorProto{
						field("id", 1, str, false, ""),
						field("grams", 2, i32, false, ""),
					},
				}},
				Field: []*descriptorpb.FieldDescriptorProto{
					field("order", 1, str, false, ""),
					field("seq", 2, i64, false, ""),
					field("carrier", 3, str, false, ""),
					field("parcels", 4, msg, true, ".patterns.event.testpb.OrderShipped.Parcel"),
				},
			},
		},
	}
	req := &pluginpb.CodeGeneratorRequest{
		FileToGenerate: []string{fd.GetName()},
		ProtoFile:      []*descriptorpb.FileDescriptorProto{fd},
		Parameter:      proto.String("paths=source_relative"),
	}
	gen, err := protogen.Options{}.New(req)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range gen.Files {
		if f.Generate {
			internal_gengo.GenerateFile(gen, f)
		}
	}
	resp := gen.Response()
	if resp.Error != nil {
		log.Fatal(resp.GetError())
	}
	for _, f := range resp.File {
		if err := os.WriteFile("order.pb.go", []byte(f.GetContent()), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
