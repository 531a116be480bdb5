//go:build unix

package netpol

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user+system) this process has used. Benchmarks
// report it per operation next to wall time, because on a shared machine the
// wall time also counts the time other processes hold the CPU.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
