package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-integration/patterns/broker"
	"github.com/go-integration/patterns/broker/middleware"
)

func ExampleRetry() {
	calls := 0
	h := broker.Chain(
		middleware.Recover(),
		middleware.Retry(middleware.RetryPolicy{MaxAttempts: 3, InitialInterval: time.Millisecond}),
		middleware.Timeout(time.Second),
	)(func(ctx context.Context, m broker.Message) error {
		calls++
		if calls < 3 {
			return errors.New("partner API unavailable")
		}
		return nil
	})
	err := h(context.Background(), broker.Message{ID: "b-1"})
	fmt.Println(err, calls)
	// Output:
	// <nil> 3
}
