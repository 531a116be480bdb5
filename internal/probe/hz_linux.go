//go:build linux

package probe

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelHZ is the kernel's CONFIG_HZ (the jiffy rate neighbour timestamps
// use), read from /boot/config-<release> or /proc/config.gz; 0 when neither
// is readable, and the probes then leave a neighbour's duration unknown.
func kernelHZ() uint32 {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		if f, err := os.Open("/boot/config-" + unix.ByteSliceToString(uts.Release[:])); err == nil {
			defer f.Close()
			if hz := configHZ(f); hz != 0 {
				return hz
			}
		}
	}
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return 0
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return 0
	}
	return configHZ(zr)
}

// configHZ finds CONFIG_HZ=<n> in a kernel configuration.
func configHZ(r io.Reader) uint32 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			if n, err := strconv.ParseUint(v, 10, 32); err == nil {
				return uint32(n)
			}
		}
	}
	return 0
}
