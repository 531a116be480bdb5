//go:build linux

package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/network-correlator/network-correlator/bpf"
	"github.com/network-correlator/network-correlator/internal/signal"
)

const kernelBTFPath = "/sys/kernel/btf/vmlinux"

// Probe is the loaded and attached set of kernel probes.
type Probe struct {
	objs    *objects
	links   []link.Link
	progs   []progRef
	rd      *ringbuf.Reader
	dec     decoder
	running atomic.Bool

	// unavailable lists optional hooks that could not be attached.
	unavailable []error

	icmpProg *ebpf.Program // the TC program; nil when it could not be loaded
	watch    *linkWatch    // attaches new interfaces; nil without
	tcMu     sync.Mutex
	tcLinks  []link.Link // ICMP ingress programs, detached by Close

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
	lostFinal uint64
	bad       atomic.Uint64
}

// objects are the loaded programs and maps (not the global variables).
type objects struct {
	TracingPrograms
	bpf.ProbeMaps
}

// TracingPrograms are bpf.ProbePrograms without the TC program, which is
// loaded on its own (Probe.icmpProg): a TC program needs CAP_NET_ADMIN,
// the tracing programs do not.
type TracingPrograms struct {
	OnInetSockSetState   *ebpf.Program `ebpf:"on_inet_sock_set_state"`
	OnKfreeSkb           *ebpf.Program `ebpf:"on_kfree_skb"`
	OnNeighEventSendDone *ebpf.Program `ebpf:"on_neigh_event_send_done"`
	OnNeighTimerHandler  *ebpf.Program `ebpf:"on_neigh_timer_handler"`
	OnSysEnterConnect    *ebpf.Program `ebpf:"on_sys_enter_connect"`
	OnSysExitConnect     *ebpf.Program `ebpf:"on_sys_exit_connect"`
	OnTcpReceiveReset    *ebpf.Program `ebpf:"on_tcp_receive_reset"`
	OnTcpRetransmitSkb   *ebpf.Program `ebpf:"on_tcp_retransmit_skb"`
	OnTcpSendReset       *ebpf.Program `ebpf:"on_tcp_send_reset"`
	OnIcmpSend           *ebpf.Program `ebpf:"on_icmp_send"`
}

// all lists every loaded program.
func (p *Probe) allPrograms() []*ebpf.Program {
	var out []*ebpf.Program
	v := reflect.ValueOf(p.objs.TracingPrograms)
	for i := range v.NumField() {
		if prog, _ := v.Field(i).Interface().(*ebpf.Program); prog != nil {
			out = append(out, prog)
		}
	}
	if p.icmpProg != nil {
		out = append(out, p.icmpProg)
	}
	return out
}

type progRef struct {
	name string
	hook string
	prog *ebpf.Program
}

// capHint says how to grant what loading needs.
const capHint = "the probes need CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root, " +
	"or grant them with `setcap cap_bpf,cap_perfmon,cap_syslog+ep <binary>`, systemd " +
	"AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_SYSLOG, or in Kubernetes " +
	"securityContext.capabilities.add: [BPF, PERFMON, SYSLOG] (CAP_SYSLOG only for drop locations)"

// Check reports, cheaply, whether Open can work here: kernel BTF present and
// the needed capabilities held. Tests use it to skip with its message.
func Check() error {
	if _, err := os.Stat(kernelBTFPath); err != nil {
		return fmt.Errorf("probe: kernel BTF missing (%s: %v): a kernel built with CONFIG_DEBUG_INFO_BTF=y is required", kernelBTFPath, err)
	}
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("probe: reading capabilities: %w", err)
	}
	const capSysAdmin, capPerfmon, capBPF = 21, 38, 39
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if !has(capSysAdmin) && !(has(capBPF) && has(capPerfmon)) {
		return errors.New("probe: missing capability: " + capHint)
	}
	return nil
}

func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			_, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps)
			return caps, err
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// Open loads the probes, fills the filters and attaches every program. The
// caller must Close it.
func Open(cfg Config) (*Probe, error) {
	return open(cfg, nil)
}

// open is Open with a hook that may change the spec before loading (tests).
func open(cfg Config, adjust func(*ebpf.CollectionSpec) error) (*Probe, error) {
	size, err := cfg.ringBufferSize(os.Getpagesize())
	if err != nil {
		return nil, err
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("probe: raising RLIMIT_MEMLOCK for eBPF maps: %w (allow it with `ulimit -l unlimited`, systemd LimitMEMLOCK=infinity, or CAP_SYS_RESOURCE)", err)
	}
	kspec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("probe: loading kernel BTF from %s: %w", kernelBTFPath, err)
	}
	dropNames, err := enumValues(kspec, "skb_drop_reason", "SKB_")
	if err != nil {
		return nil, err
	}
	rstNames, _ := enumValues(kspec, "sk_rst_reason", rstReasonPrefix) // absent before 6.10
	modes, err := dropModes(cfg.DropReasons, dropNames)
	if err != nil {
		return nil, err
	}

	spec, err := bpf.LoadProbe()
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	if err := adaptToKernel(spec, kspec); err != nil {
		return nil, err
	}
	spec.Maps[bpf.ProbeMapEvents].MaxEntries = uint32(size)
	if adjust != nil {
		if err := adjust(spec); err != nil {
			return nil, err
		}
	}

	syms := loadKallsyms()
	p := &Probe{}
	p.dec = decoder{
		wallMinusMono: wallMinusMono(),
		dropReasons:   dropNames,
		rstReasons:    rstNames,
	}
	if syms != nil {
		p.dec.syms = syms
	}

	// LoadAndAssign of programs and maps only: loading the global
	// variables too would mmap .rodata, and that mapping (released only by
	// the garbage collector) would keep the map alive after Close.
	objs := &objects{}
	if err := spec.LoadAndAssign(objs, nil); err != nil {
		return nil, loadError(err)
	}
	p.objs = objs
	// The TC program shares the ring buffer and the lost counter.
	var tc struct {
		Prog *ebpf.Program `ebpf:"on_icmp_ingress"`
	}
	if err := spec.LoadAndAssign(&tc, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		bpf.ProbeMapEvents: objs.Events, bpf.ProbeMapLost: objs.Lost,
	}}); err != nil {
		if errors.Is(err, unix.EPERM) {
			err = fmt.Errorf("%w (a TC program needs CAP_NET_ADMIN)", err)
		}
		p.unavailable = append(p.unavailable, fmt.Errorf("probe: received ICMP errors are not reported: loading the TC program: %w", err))
	} else {
		p.icmpProg = tc.Prog
	}
	if err := p.fillFilters(modes, syms); err != nil {
		p.Close()
		return nil, err
	}
	for _, np := range []struct {
		name string
		prog *ebpf.Program
	}{
		{bpf.ProbeProgOnInetSockSetState, objs.OnInetSockSetState},
		{bpf.ProbeProgOnTcpRetransmitSkb, objs.OnTcpRetransmitSkb},
		{bpf.ProbeProgOnTcpReceiveReset, objs.OnTcpReceiveReset},
		{bpf.ProbeProgOnTcpSendReset, objs.OnTcpSendReset},
		{bpf.ProbeProgOnKfreeSkb, objs.OnKfreeSkb},
		{bpf.ProbeProgOnNeighTimerHandler, objs.OnNeighTimerHandler},
		{bpf.ProbeProgOnNeighEventSendDone, objs.OnNeighEventSendDone},
		{bpf.ProbeProgOnIcmpSend, objs.OnIcmpSend},
	} {
		name, prog := np.name, np.prog
		hook := spec.Programs[name].SectionName
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			p.Close()
			if errors.Is(err, unix.EPERM) {
				return nil, fmt.Errorf("probe: attaching %s (%s): %w; %s", name, hook, err, capHint)
			}
			return nil, fmt.Errorf("probe: attaching %s (%s): %w", name, hook, err)
		}
		p.links = append(p.links, l)
		p.progs = append(p.progs, progRef{name: name, hook: hook, prog: prog})
	}
	if cfg.ConnectErrors {
		p.attachConnectHooks(spec)
	}
	// Accounted in Stats whether or not an interface is attached yet.
	if p.icmpProg != nil {
		p.progs = append(p.progs, progRef{name: bpf.ProbeProgOnIcmpIngress,
			hook: spec.Programs[bpf.ProbeProgOnIcmpIngress].SectionName, prog: p.icmpProg})
	}
	if err := p.attachInterfaces(cfg.Interfaces); err != nil {
		p.Close()
		return nil, err
	}
	rd, err := ringbuf.NewReader(objs.Events)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("probe: opening the ring buffer: %w", err)
	}
	p.rd = rd
	return p, nil
}

// attachConnectHooks attaches the connect() syscall tracepoints. They are
// optional: without tracefs (and without CAP_SYS_ADMIN to mount it
// privately) the other probes still work and Unavailable says why.
func (p *Probe) attachConnectHooks(spec *ebpf.CollectionSpec) {
	// Exit first: an exit hook alone finds no arguments and sends nothing,
	// an enter hook alone would only fill its storage. Where the exit hook
	// reads the arguments from the task's registers, no enter hook at all.
	var fromRegs bool
	_ = spec.Variables[bpf.ProbeVarConnectArgsFromRegs].Get(&fromRegs)
	hooks := []struct {
		name string
		prog *ebpf.Program
	}{
		{bpf.ProbeProgOnSysExitConnect, p.objs.OnSysExitConnect},
		{bpf.ProbeProgOnSysEnterConnect, p.objs.OnSysEnterConnect},
	}
	if fromRegs {
		hooks = hooks[:1]
	}
	for _, tp := range hooks {
		hook := spec.Programs[tp.name].SectionName
		group, event, _ := strings.Cut(strings.TrimPrefix(hook, "tracepoint/"), "/")
		l, err := attachTracepoint(tp.prog, group, event)
		if err != nil {
			p.unavailable = append(p.unavailable, fmt.Errorf("probe: connect() errors are not reported: %w", err))
			return
		}
		p.links = append(p.links, l)
		p.progs = append(p.progs, progRef{name: tp.name, hook: hook, prog: tp.prog})
	}
}

// argsInRegs tells whether the kernel's struct pt_regs is a layout the
// connect() exit hook reads the syscall's arguments from (x86-64: di, si,
// dx; arm64: orig_x0, regs).
func argsInRegs(kspec *btf.Spec) bool {
	var st *btf.Struct
	if err := kspec.TypeByName("pt_regs", &st); err != nil {
		return false
	}
	for _, m := range st.Members {
		if m.Name == "di" || m.Name == "orig_x0" {
			return true
		}
	}
	return false
}

// Unavailable lists the optional hooks that could not be attached, each
// error saying what is missing; the other probes work without them.
func (p *Probe) Unavailable() []error {
	return append([]error(nil), p.unavailable...)
}

// enumValues maps the values of a kernel enum to their names without prefix.
func enumValues(kspec *btf.Spec, enum, prefix string) (map[uint32]string, error) {
	var e *btf.Enum
	if err := kspec.TypeByName(enum, &e); err != nil {
		return nil, fmt.Errorf("probe: kernel BTF has no enum %s: %w", enum, err)
	}
	out := make(map[uint32]string, len(e.Values))
	for _, v := range e.Values {
		name := strings.TrimPrefix(v.Name, prefix)
		name = strings.TrimPrefix(name, "DROP_REASON_")
		if name == "MAX" {
			continue
		}
		out[uint32(v.Value)] = name
	}
	return out, nil
}

// adaptToKernel checks every hook exists and tells the programs which
// tracepoint arguments this kernel passes.
func adaptToKernel(spec *ebpf.CollectionSpec, kspec *btf.Spec) error {
	nargs := map[string]int{}
	for name, ps := range spec.Programs {
		if !strings.HasPrefix(ps.SectionName, "tp_btf/") {
			continue
		}
		var td *btf.Typedef
		if err := kspec.TypeByName("btf_trace_"+ps.AttachTo, &td); err != nil {
			return fmt.Errorf("probe: this kernel has no tracepoint %q (hook %s of program %s): %w", ps.AttachTo, ps.SectionName, name, err)
		}
		ptr, ok := td.Type.(*btf.Pointer)
		if !ok {
			return fmt.Errorf("probe: unexpected BTF for btf_trace_%s", ps.AttachTo)
		}
		fp, ok := ptr.Target.(*btf.FuncProto)
		if !ok {
			return fmt.Errorf("probe: unexpected BTF for btf_trace_%s", ps.AttachTo)
		}
		nargs[ps.AttachTo] = len(fp.Params) - 1 // the first is the context
	}
	if err := spec.Variables[bpf.ProbeVarConnectArgsFromRegs].Set(argsInRegs(kspec)); err != nil {
		return fmt.Errorf("probe: setting %s: %w", bpf.ProbeVarConnectArgsFromRegs, err)
	}
	if err := spec.Variables[bpf.ProbeVarKernelHz].Set(kernelHZ()); err != nil {
		return fmt.Errorf("probe: setting %s: %w", bpf.ProbeVarKernelHz, err)
	}
	for v, ok := range map[string]bool{
		bpf.ProbeVarKfreeSkbHasRxSk:        nargs["kfree_skb"] >= 4,
		bpf.ProbeVarTcpSendResetHasReason:  nargs["tcp_send_reset"] >= 3,
		bpf.ProbeVarTcpRetransmitSkbHasErr: nargs["tcp_retransmit_skb"] >= 3,
	} {
		if err := spec.Variables[v].Set(ok); err != nil {
			return fmt.Errorf("probe: setting %s: %w", v, err)
		}
	}
	return nil
}

func loadError(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		return fmt.Errorf("probe: the kernel verifier rejected a program: %w", err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("probe: loading: %w; %s", err, capHint)
	}
	return fmt.Errorf("probe: loading: %w", err)
}

func (p *Probe) fillFilters(modes map[uint32]uint8, syms *symtab) error {
	var ranges [][2]uint64
	if syms != nil {
		for _, fn := range notSpecifiedAt {
			ranges = append(ranges, syms.ranges(fn)...)
		}
	}
	if len(ranges) > maxLocations {
		ranges = ranges[:maxLocations]
	}
	for i, r := range ranges {
		if err := p.objs.DropLocations.Put(uint32(i), bpf.ProbeLocRange{Lo: r[0], Hi: r[1]}); err != nil {
			return fmt.Errorf("probe: filling drop_locations: %w", err)
		}
	}
	for v, m := range modes {
		if m == modeAtLocation && len(ranges) == 0 {
			continue // cannot tell where: leave it out rather than flood
		}
		mp := p.objs.DropReasons
		if v >= coreReasons {
			mp = p.objs.DropReasonsExt
		}
		if err := mp.Put(v, m); err != nil {
			return fmt.Errorf("probe: filling drop reasons: %w", err)
		}
	}
	return nil
}

func loadKallsyms() *symtab {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return nil
	}
	defer f.Close()
	t, err := parseKallsyms(f)
	if err != nil {
		return nil
	}
	return t
}

// wallMinusMono is the offset from CLOCK_MONOTONIC (bpf_ktime_get_ns) to
// wall clock, taken from the tightest of a few readings.
func wallMinusMono() int64 {
	var best, off int64 = -1, 0
	for range 5 {
		var m1, r, m2 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1)
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &r)
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2)
		gap := m2.Nano() - m1.Nano()
		if best < 0 || gap < best {
			best = gap
			off = r.Nano() - (m1.Nano()+m2.Nano())/2
		}
	}
	return off
}

// Run reads and decodes records, calling emit for each signal, until ctx is
// done (returns ctx.Err()) or the probe is closed (returns nil). Only one
// Run may be active at a time.
func (p *Probe) Run(ctx context.Context, emit func(signal.Signal)) error {
	if p.closed.Load() {
		return errors.New("probe: Run after Close")
	}
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("probe: Run is already active")
	}
	defer p.running.Store(false)
	// Flush wakes a blocked read without taking the reader's lock.
	stop := context.AfterFunc(ctx, func() { _ = p.rd.Flush() })
	defer stop()

	var rec ringbuf.Record
	var s signal.Signal
	synced := time.Now()
	for {
		err := p.rd.ReadInto(&rec)
		switch {
		case err == nil:
		case errors.Is(err, ringbuf.ErrClosed), errors.Is(err, os.ErrClosed):
			return nil
		case errors.Is(err, ringbuf.ErrFlushed):
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue
		default:
			return fmt.Errorf("probe: reading the ring buffer: %w", err)
		}
		// Wall clock and CLOCK_MONOTONIC drift apart when NTP slews or
		// steps the clock: refresh the offset now and then.
		if time.Since(synced) > time.Minute {
			p.dec.wallMinusMono = wallMinusMono()
			synced = time.Now()
		}
		if err := p.dec.decode(rec.RawSample, &s); err != nil {
			p.bad.Add(1)
			continue
		}
		emit(s)
	}
}

// Lost returns how many records the kernel could not queue because the
// ring buffer was full.
func (p *Probe) Lost() uint64 {
	if p.closed.Load() {
		return p.lostFinal
	}
	return p.readLost()
}

func (p *Probe) readLost() uint64 {
	var per []uint64
	if err := p.objs.Lost.Lookup(uint32(0), &per); err != nil {
		return 0
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n
}

// Undecodable counts records the decoder rejected (should stay 0).
func (p *Probe) Undecodable() uint64 { return p.bad.Load() }

// Stats returns the kernel's run count and run time of every program.
func (p *Probe) Stats() ([]ProgramStats, error) {
	out := make([]ProgramStats, 0, len(p.progs))
	for _, pr := range p.progs {
		st, err := pr.prog.Stats()
		if err != nil {
			return nil, fmt.Errorf("probe: stats of %s: %w", pr.name, err)
		}
		out = append(out, ProgramStats{
			Name: pr.name, Hook: pr.hook,
			RunCount: st.RunCount, RunTime: st.Runtime, RecursionMisses: st.RecursionMisses,
		})
	}
	return out, nil
}

// EnableStats turns on the kernel's per-program run time accounting
// (as kernel.bpf_stats_enabled=1 does) until the returned Closer is closed.
// It needs CAP_SYS_ADMIN.
func EnableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("probe: enabling BPF run time statistics: %w", err)
	}
	return c, nil
}

// programIDs lists the kernel IDs of the loaded programs (for tests).
func (p *Probe) programIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, prog := range p.allPrograms() {
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// mapIDs lists the kernel IDs of the maps (for tests).
func (p *Probe) mapIDs() []ebpf.MapID {
	var ids []ebpf.MapID
	v := reflect.ValueOf(p.objs.ProbeMaps)
	for i := range v.NumField() {
		m, _ := v.Field(i).Interface().(*ebpf.Map)
		if m == nil {
			continue
		}
		if info, err := m.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// Close detaches and unloads everything; it is safe to call more than once.
// A concurrent Run returns nil.
func (p *Probe) Close() error {
	p.closeOnce.Do(func() {
		var errs []error
		if p.objs != nil {
			p.lostFinal = p.readLost()
		}
		p.closed.Store(true)
		if p.rd != nil {
			errs = append(errs, p.rd.Close())
		}
		for _, l := range p.links {
			errs = append(errs, l.Close())
		}
		if p.watch != nil {
			p.watch.close()
		}
		p.tcMu.Lock()
		for _, l := range p.tcLinks {
			errs = append(errs, l.Close())
		}
		p.tcLinks = nil
		p.tcMu.Unlock()
		if p.objs != nil {
			for _, prog := range p.allPrograms() {
				errs = append(errs, prog.Close())
			}
			errs = append(errs, p.objs.ProbeMaps.Close())
		}
		p.closeErr = errors.Join(errs...)
	})
	return p.closeErr
}
