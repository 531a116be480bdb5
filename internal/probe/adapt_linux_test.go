//go:build linux

package probe

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/network-correlator/network-correlator/bpf"
)

// fakeKernel builds a kernel BTF holding btf_trace_<hook> typedefs whose
// prototypes take nargs tracepoint arguments.
func fakeKernel(t *testing.T, hooks map[string]int) *btf.Spec {
	t.Helper()
	b, err := btf.NewBuilder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ptr := &btf.Pointer{Target: &btf.Void{}}
	for hook, n := range hooks {
		params := []btf.FuncParam{{Type: ptr}} // the context
		for range n {
			params = append(params, btf.FuncParam{Type: ptr})
		}
		td := &btf.Typedef{Name: "btf_trace_" + hook, Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: params}}}
		if _, err := b.Add(td); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestAdaptToKernel(t *testing.T) {
	neigh := map[string]int{"neigh_timer_handler": 2, "neigh_event_send_done": 2, "icmp_send": 3}
	with := func(m map[string]int) map[string]int {
		for k, v := range neigh {
			m[k] = v
		}
		return m
	}
	k618 := with(map[string]int{"inet_sock_set_state": 3, "tcp_retransmit_skb": 3, "tcp_receive_reset": 1, "tcp_send_reset": 3, "kfree_skb": 4})
	k65 := with(map[string]int{"inet_sock_set_state": 3, "tcp_retransmit_skb": 2, "tcp_receive_reset": 1, "tcp_send_reset": 2, "kfree_skb": 3})
	noRst := with(map[string]int{"inet_sock_set_state": 3, "tcp_retransmit_skb": 3, "tcp_send_reset": 3, "kfree_skb": 4})
	tests := []struct {
		name    string
		kernel  map[string]int
		want    map[string]bool
		wantErr string
	}{
		{"6.18 arguments", k618, map[string]bool{
			bpf.ProbeVarKfreeSkbHasRxSk: true, bpf.ProbeVarTcpSendResetHasReason: true, bpf.ProbeVarTcpRetransmitSkbHasErr: true}, ""},
		{"6.5 arguments", k65, map[string]bool{
			bpf.ProbeVarKfreeSkbHasRxSk: false, bpf.ProbeVarTcpSendResetHasReason: false, bpf.ProbeVarTcpRetransmitSkbHasErr: false}, ""},
		{"missing hook is named", noRst, nil, `no tracepoint "tcp_receive_reset" (hook tp_btf/tcp_receive_reset of program on_tcp_receive_reset)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := bpf.LoadProbe()
			if err != nil {
				t.Fatal(err)
			}
			err = adaptToKernel(spec, fakeKernel(t, tt.kernel))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for v, want := range tt.want {
				var got bool
				if err := spec.Variables[v].Get(&got); err != nil {
					t.Fatal(err)
				}
				if got != want {
					t.Errorf("%s = %v, want %v", v, got, want)
				}
			}
		})
	}
}

// The code paths for older kernels (fewer tracepoint arguments) must pass
// this kernel's verifier too: load with every argument switch off.
func TestLoadsWithOlderKernelArguments(t *testing.T) {
	requireProbe(t)
	p, err := open(Config{}, func(spec *ebpf.CollectionSpec) error {
		for _, v := range []string{bpf.ProbeVarKfreeSkbHasRxSk, bpf.ProbeVarTcpSendResetHasReason, bpf.ProbeVarTcpRetransmitSkbHasErr,
			bpf.ProbeVarConnectArgsFromRegs} {
			if err := spec.Variables[v].Set(false); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("loading with the older-kernel argument lists: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// The connect() exit hook reads the syscall's arguments from the saved
// registers only for the pt_regs layouts it knows.
func TestArgsInRegs(t *testing.T) {
	u64 := &btf.Int{Name: "u64", Size: 8}
	tests := []struct {
		name    string
		members []string
		want    bool
	}{
		{"x86-64", []string{"r15", "ax", "dx", "si", "di", "orig_ax"}, true},
		{"arm64", []string{"user_regs", "orig_x0", "syscallno"}, true},
		{"s390", []string{"args", "psw", "gprs", "orig_gpr2"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := btf.NewBuilder(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := &btf.Struct{Name: "pt_regs", Size: uint32(8 * len(tt.members))}
			for i, m := range tt.members {
				st.Members = append(st.Members, btf.Member{Name: m, Type: u64, Offset: btf.Bits(64 * i)})
			}
			if _, err := b.Add(st); err != nil {
				t.Fatal(err)
			}
			raw, err := b.Marshal(nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			if got := argsInRegs(spec); got != tt.want {
				t.Errorf("argsInRegs = %v, want %v", got, tt.want)
			}
		})
	}
	if argsInRegs(fakeKernel(t, map[string]int{"kfree_skb": 4})) {
		t.Error("argsInRegs without any pt_regs = true")
	}
}
