//go:build linux

package probe

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// AttachICMP watches the ingress of interface ifname of the calling
// thread's network namespace for ICMP errors. To watch an interface of
// another namespace, call it on a thread switched into that namespace
// (lab.Host.Do does that). Close detaches every interface; an interface
// that is deleted detaches by itself.
func (p *Probe) AttachICMP(ifname string) error {
	if p.closed.Load() {
		return errors.New("probe: AttachICMP after Close")
	}
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return fmt.Errorf("probe: interface %q: %w", ifname, err)
	}
	return p.attachICMPIndex(ifc.Index, ifname)
}

func (p *Probe) attachICMPIndex(ifindex int, ifname string) error {
	if p.icmpProg == nil {
		return fmt.Errorf("probe: the ICMP error probe is not loaded: %v", errors.Join(p.unavailable...))
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   p.icmpProg,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return fmt.Errorf("probe: attaching the ICMP error probe to %s ingress (TCX, Linux 6.6+): %w", ifname, err)
	}
	p.tcMu.Lock()
	defer p.tcMu.Unlock()
	if p.closed.Load() {
		l.Close()
		return errors.New("probe: AttachICMP after Close")
	}
	p.tcLinks = append(p.tcLinks, l)
	return nil
}

// attachInterfaces attaches the ICMP probe at Open: to the named
// interfaces (each must exist), or to every interface present. With no
// names, interfaces that vanish meanwhile are skipped, and a kernel
// without TCX leaves ICMP errors out (listed by Unavailable).
func (p *Probe) attachInterfaces(names []string) error {
	if len(names) > 0 {
		for _, n := range names {
			if err := p.AttachICMP(n); err != nil {
				return fmt.Errorf("probe: Interfaces: %w", err)
			}
		}
		return nil
	}
	if p.icmpProg == nil {
		return nil // already listed by Unavailable
	}
	ifs, err := net.Interfaces()
	if err != nil {
		p.unavailable = append(p.unavailable, fmt.Errorf("probe: received ICMP errors are not reported: listing interfaces: %w", err))
		return nil
	}
	for _, ifc := range ifs {
		err := p.attachICMPIndex(ifc.Index, ifc.Name)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENODEV):
		default:
			p.unavailable = append(p.unavailable, fmt.Errorf("probe: received ICMP errors are not reported on %s: %w", ifc.Name, err))
		}
	}
	return nil
}
