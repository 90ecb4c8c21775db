package telemetry

import "go.opentelemetry.io/otel/metric"

// instruments are every metric instrument of the package, made once in New.
// Each file adds the fields it needs here and creates them in newInstruments.
type instruments struct {
	broker       brokerInstruments       // broker.go
	sharedDB     sharedDBInstruments     // shareddb.go
	fileTransfer fileTransferInstruments // filetransfer.go
	rpc          rpcInstruments          // rpc.go (http.client.request.duration is Webhook's too)
	amqprpc      amqprpcInstruments      // amqprpc.go
	webhook      webhookInstruments      // webhook.go
	outbox       outboxInstruments       // outbox.go
	kafka        kafkaInstruments        // kafka.go
}

// durationBuckets are the semantic conventions' advisory bucket boundaries
// for messaging and HTTP durations, in seconds, shared by the broker,
// outbox, rpc, amqprpc and webhook duration histograms.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

func newInstruments(m metric.Meter) (*instruments, error) {
	in := &instruments{}
	if err := in.broker.init(m); err != nil {
		return nil, err
	}
	if err := in.sharedDB.init(m); err != nil {
		return nil, err
	}
	if err := in.fileTransfer.init(m); err != nil {
		return nil, err
	}
	if err := in.rpc.init(m); err != nil {
		return nil, err
	}
	if err := in.amqprpc.init(m); err != nil {
		return nil, err
	}
	if err := in.webhook.init(m); err != nil {
		return nil, err
	}
	if err := in.outbox.init(m); err != nil {
		return nil, err
	}
	if err := in.kafka.init(m); err != nil {
		return nil, err
	}
	return in, nil
}
