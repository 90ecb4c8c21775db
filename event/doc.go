// Package event publishes and handles typed events, as CloudEvents, over any
// broker.Publisher and broker.Subscriber: the memory broker, RabbitMQ and
// Kafka alike.
//
// A [Registry] maps CloudEvents type names to Go types, each with a version,
// a [Codec] ([JSON] by default; Protobuf, Avro and Schema Registry codecs
// implement the same interface in sub-packages) and upcasters from older
// versions. [Publish] (or [Encode], for batches and outboxes) turns a
// registered Go value into a broker.Message carrying a CloudEvent; a
// [Router] is a broker.Handler that turns messages back into [Event] values
// and calls the handler registered for their type with [Handle]:
//
//	reg, _ := event.NewRegistry(event.WithSource("/orders"))
//	_ = event.Register[OrderPlaced](reg, "com.example.order.placed")
//	_ = event.Publish(ctx, reg, pub, "orders", "order.42", OrderPlaced{ID: 42})
//
//	rt, _ := event.NewRouter(reg, event.WithUnknown(event.Skip))
//	_ = event.Handle(rt, func(ctx context.Context, e event.Event[OrderPlaced]) error { ... })
//	_ = rt.Subscribe(ctx, sub, broker.Subscription{Topic: "orders", Group: "billing", DeadLetterTopic: "orders.dlq"})
//
// The package adds no consumer logic of its own: retries, order per key,
// concurrency and dead-lettering are the subscription's, on the module's one
// engine.
//
// # CloudEvents on the wire
//
// In binary mode (the default) the payload is the codec's bytes and the
// attributes travel in broker.Message.Header under a [Headers] scheme:
// [KafkaHeaders] ("ce_type", the Kafka protocol binding) by default on every
// broker, or [AMQPHeaders] ("cloudEvents:type", the AMQP binding);
// datacontenttype is the "content-type" header, which the RabbitMQ adapter
// maps to the AMQP content-type property. The version of the event type is
// the "dataversion" extension attribute. The Router reads every scheme, so
// producers may differ. In structured mode ([WithMode]([Structured])) the
// whole event is JSON in the payload with content type
// [StructuredContentType]; the Router recognises it by that content type.
//
// # Errors and versions
//
// A message that is not a valid CloudEvent ([ErrMissingAttribute],
// [ErrInvalidAttribute]), whose data does not decode ([ErrDecode]), whose
// version cannot be brought to the registered one ([ErrVersion],
// [ErrUpcast]) or whose type has no handler under the [DeadLetter] policy
// ([ErrUnknownType]) fails with a broker.Permanent error: the subscription
// dead-letters it at once, with the reason in its broker.HeaderError header.
// A codec whose service is down says so by wrapping [ErrUnavailable]; that
// error stays transient and the message is retried. A subscription without a
// dead-letter destination drops what fails permanently, so
// [Router.Subscribe] refuses one.
//
// An event of an older version is upcast, step by step, by the upcasters
// registered with [WithUpcaster]; an event of a newer version than
// registered fails with ErrVersion (upgrade consumers before producers).
package event
