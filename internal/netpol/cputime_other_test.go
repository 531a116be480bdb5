//go:build !unix

package netpol

import "time"

func processCPU() time.Duration { return -1 }
