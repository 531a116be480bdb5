package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// symtab maps kernel text addresses to function names (/proc/kallsyms).
// Names live in one blob to keep ~120k symbols in a few MB.
type symtab struct {
	syms []sym
	blob []byte
}

type sym struct {
	addr uint64
	off  uint32
	n    uint32
}

// parseKallsyms reads text symbols ("t"/"T", also weak "w"/"W") from the
// /proc/kallsyms format: "ffffffff81fbdf90 T nft_do_chain\t[nf_tables]".
// It returns nil, nil when every address is zero (the reader lacks
// CAP_SYSLOG or kptr_restrict hides them).
func parseKallsyms(r io.Reader) (*symtab, error) {
	t := &symtab{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	nonZero := false
	for sc.Scan() {
		line := sc.Bytes()
		f := bytes.Fields(line)
		if len(f) < 3 || len(f[1]) != 1 {
			continue
		}
		switch f[1][0] {
		case 't', 'T', 'w', 'W':
		default:
			continue
		}
		addr, err := strconv.ParseUint(string(f[0]), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("kallsyms: bad address in %q", line)
		}
		if addr != 0 {
			nonZero = true
		}
		t.syms = append(t.syms, sym{addr: addr, off: uint32(len(t.blob)), n: uint32(len(f[2]))})
		t.blob = append(t.blob, f[2]...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kallsyms: %w", err)
	}
	if !nonZero {
		return nil, nil
	}
	// The kernel's own symbols come sorted, module symbols follow unsorted.
	slices.SortStableFunc(t.syms, func(a, b sym) int {
		switch {
		case a.addr < b.addr:
			return -1
		case a.addr > b.addr:
			return 1
		}
		return 0
	})
	return t, nil
}

func (t *symtab) name(i int) string {
	s := t.syms[i]
	return string(t.blob[s.off : s.off+s.n])
}

// symbol returns the function that contains addr: the symbol with the
// highest address not above it.
func (t *symtab) symbol(addr uint64) string {
	i, found := slices.BinarySearchFunc(t.syms, addr, func(s sym, a uint64) int {
		switch {
		case s.addr < a:
			return -1
		case s.addr > a:
			return 1
		}
		return 0
	})
	if !found {
		i--
	}
	if i < 0 {
		return ""
	}
	return t.name(i)
}

// ranges returns [start, end) of every function called name; end is the next
// higher symbol address.
func (t *symtab) ranges(name string) [][2]uint64 {
	var out [][2]uint64
	for i, s := range t.syms {
		if string(t.blob[s.off:s.off+s.n]) != name {
			continue
		}
		lo := t.syms[i].addr
		for j := i + 1; j < len(t.syms); j++ {
			if t.syms[j].addr > lo {
				out = append(out, [2]uint64{lo, t.syms[j].addr})
				break
			}
		}
	}
	return out
}
