// Package testpb holds the Protobuf messages of the event/protobuf and
// event/schemaregistry tests and examples: order.proto, and order.pb.go
// generated from it by protoc-gen-go's generator (gen.go builds the
// descriptor, so protoc is not needed).
package testpb

//go:generate go run gen.go

import _ "embed"

// OrderProto is the source of order.proto, the schema text a Schema
// Registry stores for these messages.
//
//go:embed order.proto
var OrderProto string
