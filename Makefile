# Two commands matter (see README.md):
#   make run    runs the main example on embedded defaults
#   make test   starts the services the tests need and runs every test
GO ?= go
STATICCHECK_VERSION ?= v0.8.2

.PHONY: run test test-unit services lint bench bench-table

run:
	$(GO) run ./examples/bookings

services:
	scripts/services

# The packages with server-wide fault tests (TestFault...): only these run
# in the serial step, since every test binary built with -race sleeps 1 s
# at exit (the race detector's atexit_sleep_ms), even one with no test to run.
FAULT_PKGS := $(shell grep -rl --include='*_test.go' --exclude-dir=bench 'func TestFault' . | xargs -n1 dirname | sort -u)

# The server-wide fault tests first, one package at a time (they restart
# RabbitMQ and the replica and pause replay, so nothing else may share the
# servers while they run), then every test in parallel. The 3-node RabbitMQ
# cluster (scripts/rabbitmq-cluster) runs for the fault step only, whose
# cluster failover tests need it (about 20 s to start); it is stopped after
# that step, whatever its outcome, so that its three Erlang VMs do not
# compete with the parallel step; so is the PostgreSQL pair the failover
# tests start (scripts/pg-pair). Last, the tests of bench/ (its own
# module): a quick run of the in-process scenarios.
test: services
	scripts/rabbitmq-cluster start
	FAULT_TESTS=1 $(GO) test -race -count=1 -p 1 -timeout 10m -run '^TestFault' $(FAULT_PKGS); \
		status=$$?; scripts/rabbitmq-cluster stop; scripts/pg-pair stop >/dev/null 2>&1; exit $$status
	$(GO) test -race -count=1 -timeout 15m ./...
	cd bench && $(GO) test -count=1 -timeout 5m ./...

# Tests that need no external service still run; the rest skip with the reason.
test-unit:
	$(GO) test -count=1 ./...

lint:
	test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) vet ./...
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	"$$($(GO) env GOPATH)/bin/staticcheck" ./...
	cd bench && $(GO) vet ./... && "$$($(GO) env GOPATH)/bin/staticcheck" ./...

# Each package's testing.B benchmarks against its raw client. Brokers get
# fixed counts (a growing b.N would fill kfake and RabbitMQ with gigabytes),
# exports a few runs of a million rows each.
BENCH_PKGS_FIXED = ./broker/rabbitmq ./broker/kafka
bench: services
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./... | grep -v -e /broker/rabbitmq -e /broker/kafka -e /broker/outbox -e /filetransfer$$)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 20000x $(BENCH_PKGS_FIXED)
	$(GO) test -run '^$$' -bench 'RelayThroughput|UnderLoad' -benchtime 20000x ./broker/outbox
	$(GO) test -run '^$$' -bench 'Latency' -benchtime 100x ./broker/outbox
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x ./filetransfer
	cd webhook/internal/refbench && $(GO) test -run '^$$' -bench . -benchmem

# The comparison table with raw clients and Watermill (bench/ is its own module).
bench-table: services
	cd bench && $(GO) run .
