//go:build !unix

package testenv

import "time"

// ProcessCPU returns 0: the process's CPU time is not measured here, and
// benchmarks then leave the CPU metric out.
func ProcessCPU() time.Duration { return 0 }
