//go:build linux

package probe

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"

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
// interfaces (each must exist), or to every interface present and, through
// a link watch, to every interface created later in this namespace. With
// no names, interfaces that vanish meanwhile are skipped, and a kernel
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
	// Watch before listing, so no interface falls between the two.
	w, werr := newLinkWatch()
	if werr != nil {
		p.unavailable = append(p.unavailable, fmt.Errorf("probe: interfaces created after Open are not watched for ICMP errors: %w", werr))
	}
	ifs, err := net.Interfaces()
	if err != nil {
		if w != nil {
			w.close()
		}
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
	if w != nil {
		p.watch = w
		attached := make(map[int]bool, len(ifs))
		for _, ifc := range ifs {
			attached[ifc.Index] = true
		}
		go w.run(p, attached)
	}
	return nil
}

// linkWatch follows RTM_NEWLINK/RTM_DELLINK of the namespace Open ran in
// and attaches the ICMP probe to each new interface.
type linkWatch struct {
	fd   int // NETLINK_ROUTE socket joined to RTNLGRP_LINK
	nsfd int // the namespace, for the attaching thread
	stop chan struct{}
	done chan struct{}
}

func newLinkWatch() (*linkWatch, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (unix.RTNLGRP_LINK - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("joining RTNLGRP_LINK: %w", err)
	}
	// Wake up now and then to notice close.
	tv := unix.Timeval{Usec: 200_000}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	nsfd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("opening this thread's network namespace: %w", err)
	}
	return &linkWatch{fd: fd, nsfd: nsfd, stop: make(chan struct{}), done: make(chan struct{})}, nil
}

func (w *linkWatch) run(p *Probe, attached map[int]bool) {
	defer close(w.done)
	defer unix.Close(w.fd)
	defer unix.Close(w.nsfd)
	// Attaching by ifindex resolves it in the calling thread's namespace:
	// this thread joins Open's namespace and is discarded afterwards
	// (never unlocked).
	runtime.LockOSThread()
	if err := unix.Setns(w.nsfd, unix.CLONE_NEWNET); err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		for _, m := range msgs {
			if len(m.Data) < unix.SizeofIfInfomsg {
				continue
			}
			idx := int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
			switch m.Header.Type {
			case unix.RTM_NEWLINK:
				if attached[idx] {
					continue
				}
				attached[idx] = true
				// An interface may vanish before the attach: skip it.
				_ = p.attachICMPIndex(idx, fmt.Sprintf("ifindex %d", idx))
			case unix.RTM_DELLINK:
				// The kernel detached the program with the device;
				// the ifindex may be reused by a new interface.
				delete(attached, idx)
			}
		}
	}
}

func (w *linkWatch) close() {
	close(w.stop)
	<-w.done
}
