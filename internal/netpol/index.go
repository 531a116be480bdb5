package netpol

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	networkingv1 "k8s.io/api/networking/v1"
)

// namespaceNameLabel is set by the API server on every namespace.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// Options are the implementation-defined choices of the evaluator.
type Options struct {
	// IPBlockMatchesPods decides whether an ipBlock peer matches traffic
	// whose peer is a pod (by its pod IP). Kubernetes leaves this to the
	// network plugin: the upstream e2e tests ("should allow egress access to
	// server in CIDR block") expect it to match, and most plugins do; some
	// (and netpol-analyzer) treat ipBlock as cluster-external only. Host-network
	// pods and addresses outside the pod network always match by IP.
	IPBlockMatchesPods bool
}

// DefaultOptions match the upstream conformance tests.
func DefaultOptions() Options { return Options{IPBlockMatchesPods: true} }

type labelKV struct{ k, v string }

type nsState struct {
	name     string
	labels   map[string]string
	declared bool // the namespace object itself was added
	pods     map[string]*Pod
	policies map[string]*compiledPolicy
	// byLabel indexes policies by one equality term of their podSelector;
	// unanchored holds the others (empty selectors, only set-based terms).
	byLabel    map[labelKV][]*compiledPolicy
	unanchored []*compiledPolicy
	// broken holds the policies of this namespace that did not compile.
	broken map[string]PolicyError
}

// Index holds the cluster snapshot the evaluator answers from. It is safe for
// concurrent use; updates are incremental (one pod, namespace or policy at a
// time), so informer events can be applied as they come.
type Index struct {
	mu       sync.RWMutex
	opts     Options
	ns       map[string]*nsState
	podsByIP map[netip.Addr]*Pod // pod-network pods only
	hostIPs  map[netip.Addr]*Pod // host-network pods, for naming them in verdicts
}

// NewIndex returns an empty index.
func NewIndex(opts Options) *Index {
	return &Index{
		opts:     opts,
		ns:       map[string]*nsState{},
		podsByIP: map[netip.Addr]*Pod{},
		hostIPs:  map[netip.Addr]*Pod{},
	}
}

// Build indexes a full snapshot and returns the policies it had to leave out.
func Build(opts Options, namespaces []Namespace, pods []Pod, policies []*networkingv1.NetworkPolicy) (*Index, []PolicyError) {
	x := NewIndex(opts)
	for _, n := range namespaces {
		x.SetNamespace(n)
	}
	for _, p := range pods {
		x.SetPod(p)
	}
	var errs []PolicyError
	for _, p := range policies {
		if err := x.SetPolicy(p); err != nil {
			errs = append(errs, *err)
		}
	}
	return x, errs
}

// Options returns the options the index was built with.
func (x *Index) Options() Options { return x.opts }

func (x *Index) nsLocked(name string) *nsState {
	n := x.ns[name]
	if n == nil {
		n = &nsState{
			name:     name,
			labels:   map[string]string{namespaceNameLabel: name},
			pods:     map[string]*Pod{},
			policies: map[string]*compiledPolicy{},
			byLabel:  map[labelKV][]*compiledPolicy{},
			broken:   map[string]PolicyError{},
		}
		x.ns[name] = n
	}
	return n
}

// SetNamespace adds or updates a namespace's labels. The
// kubernetes.io/metadata.name label is added when missing, as the API server
// does. Namespaces referenced only by pods or policies get that label alone.
func (x *Index) SetNamespace(n Namespace) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.nsLocked(n.Name)
	labels := make(map[string]string, len(n.Labels)+1)
	for k, v := range n.Labels {
		labels[k] = v
	}
	if _, ok := labels[namespaceNameLabel]; !ok {
		labels[namespaceNameLabel] = n.Name
	}
	s.labels = labels
	s.declared = true
}

// DeleteNamespace forgets a namespace with its pods and policies.
func (x *Index) DeleteNamespace(name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.ns[name]
	if s == nil {
		return
	}
	for _, p := range s.pods {
		x.unindexPodLocked(p)
	}
	delete(x.ns, name)
}

// SetPod adds or replaces a pod. The Pod is copied; later changes by the
// caller do not affect the index.
func (x *Index) SetPod(p Pod) {
	cp := p
	cp.Labels = copyLabels(p.Labels)
	cp.IPs = make([]netip.Addr, len(p.IPs))
	for i, a := range p.IPs {
		cp.IPs[i] = a.Unmap()
	}
	cp.Ports = append([]ContainerPort(nil), p.Ports...)
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.nsLocked(p.Namespace)
	if old := s.pods[p.Name]; old != nil {
		x.unindexPodLocked(old)
	}
	s.pods[p.Name] = &cp
	m := x.podsByIP
	if cp.HostNetwork {
		m = x.hostIPs
	}
	for _, a := range cp.IPs {
		m[a] = &cp
	}
}

// DeletePod removes a pod.
func (x *Index) DeletePod(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.ns[namespace]
	if s == nil || s.pods[name] == nil {
		return
	}
	x.unindexPodLocked(s.pods[name])
	delete(s.pods, name)
}

func (x *Index) unindexPodLocked(p *Pod) {
	for _, a := range p.IPs {
		if x.podsByIP[a] == p {
			delete(x.podsByIP, a)
		}
		if x.hostIPs[a] == p {
			delete(x.hostIPs, a)
		}
	}
}

func copyLabels(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func policyKey(ns, name string) string { return ns + "/" + name }

// brokenIn appends the namespace's uncompilable policies, sorted by name.
func (s *nsState) brokenIn(out []PolicyError) []PolicyError {
	start := len(out)
	for _, e := range s.broken {
		out = append(out, e)
	}
	slices.SortFunc(out[start:], func(a, b PolicyError) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// SetPolicy adds or replaces a policy. A policy that does not compile is
// removed from evaluation and its error returned (and kept in Errors).
func (x *Index) SetPolicy(p *networkingv1.NetworkPolicy) *PolicyError {
	cp, perr := compilePolicy(p)
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.nsLocked(p.Namespace)
	if old := s.policies[p.Name]; old != nil {
		s.removePolicy(old)
	}
	delete(s.broken, p.Name)
	if perr != nil {
		s.broken[p.Name] = *perr
		return perr
	}
	s.policies[p.Name] = cp
	if cp.anchorKey == "" {
		s.unanchored = append(s.unanchored, cp)
	} else {
		for _, v := range cp.anchorVals {
			kv := labelKV{cp.anchorKey, v}
			s.byLabel[kv] = append(s.byLabel[kv], cp)
		}
	}
	return nil
}

// DeletePolicy removes a policy (and its error, if it had one).
func (x *Index) DeletePolicy(namespace, name string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if s := x.ns[namespace]; s != nil {
		delete(s.broken, name)
		if old := s.policies[name]; old != nil {
			s.removePolicy(old)
		}
	}
}

func (s *nsState) removePolicy(cp *compiledPolicy) {
	delete(s.policies, cp.name)
	if cp.anchorKey == "" {
		s.unanchored = removePtr(s.unanchored, cp)
		return
	}
	for _, v := range cp.anchorVals {
		kv := labelKV{cp.anchorKey, v}
		if l := removePtr(s.byLabel[kv], cp); len(l) > 0 {
			s.byLabel[kv] = l
		} else {
			delete(s.byLabel, kv)
		}
	}
}

func removePtr(l []*compiledPolicy, p *compiledPolicy) []*compiledPolicy {
	for i, q := range l {
		if q == p {
			copy(l[i:], l[i+1:])
			l[len(l)-1] = nil
			return l[:len(l)-1]
		}
	}
	return l
}

// Errors returns the current per-policy errors, sorted by namespace/name.
func (x *Index) Errors() []PolicyError {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []PolicyError
	for _, s := range x.ns {
		for _, e := range s.broken {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return policyKey(out[i].Namespace, out[i].Name) < policyKey(out[j].Namespace, out[j].Name)
	})
	return out
}

// selecting returns the policies of the pod's namespace that select it for
// dir, sorted by name. It looks only at the policies indexed under one of the
// pod's labels plus the unanchored ones.
func (s *nsState) selecting(p *Pod, dir Direction, buf []*compiledPolicy) []*compiledPolicy {
	// A policy is indexed under one key (with one or more values) and a pod
	// has one value per key, so no policy is reached twice.
	out := buf[:0]
	for _, cp := range s.unanchored {
		if cp.selects(p, dir) {
			out = append(out, cp)
		}
	}
	if len(s.byLabel) > 0 {
		for k, v := range p.Labels {
			for _, cp := range s.byLabel[labelKV{k, v}] {
				if cp.selects(p, dir) {
					out = append(out, cp)
				}
			}
		}
	}
	if len(out) > 1 {
		slices.SortFunc(out, func(a, b *compiledPolicy) int { return strings.Compare(a.name, b.name) })
	}
	return out
}

func (cp *compiledPolicy) selects(p *Pod, dir Direction) bool {
	if (dir == Ingress && !cp.ingress) || (dir == Egress && !cp.egress) {
		return false
	}
	return cp.podSel.matches(p.Labels)
}
