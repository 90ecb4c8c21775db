package rabbitmq

import "time"

// SetFlushTimeout shortens how long Close waits for outstanding confirms.
func (p *Publisher) SetFlushTimeout(d time.Duration) { p.flush = d }
