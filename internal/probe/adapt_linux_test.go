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
		for _, v := range []string{bpf.ProbeVarKfreeSkbHasRxSk, bpf.ProbeVarTcpSendResetHasReason, bpf.ProbeVarTcpRetransmitSkbHasErr} {
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
