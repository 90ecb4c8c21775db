//go:build unix

package telemetry_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) the process used so
// far: per-operation CPU time compares set-ups more steadily than wall
// time when other processes share the machine.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
