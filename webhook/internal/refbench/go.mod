module github.com/go-integration/patterns/webhook/internal/refbench

go 1.26.0

require (
	github.com/go-integration/patterns v0.0.0
	github.com/standard-webhooks/standard-webhooks/libraries v0.0.1
)

replace github.com/go-integration/patterns => ../../..
