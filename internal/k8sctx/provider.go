package k8sctx

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// NamespaceInfo is a namespace as the policy evaluator sees it.
type NamespaceInfo struct {
	Name   string
	Labels map[string]string
}

// PodInfo is a pod as the policy evaluator sees it.
type PodInfo struct {
	Namespace   string
	Name        string
	Labels      map[string]string
	IPs         []netip.Addr
	Ports       []ContainerPort
	HostNetwork bool
	Node        string
}

// PolicyObserver receives namespace, pod and NetworkPolicy changes, in
// order, from the informers' goroutines; the policy evaluator's index is
// kept current through it without depending on client-go. Maps and policies
// are shared: read, never modify.
type PolicyObserver interface {
	SetNamespace(NamespaceInfo)
	DeleteNamespace(name string)
	SetPod(PodInfo)
	DeletePod(namespace, name string)
	SetPolicy(*networkingv1.NetworkPolicy)
	DeletePolicy(namespace, name string)
}

// PolicySource is the read side the policy evaluator needs: consistent
// lists of the cached objects.
type PolicySource interface {
	Namespaces() []NamespaceInfo
	Pods() []PodInfo
	NetworkPolicies() []*networkingv1.NetworkPolicy
}

// Provider watches the cluster and answers IP lookups from its index. It
// never blocks its callers on the API server: lookups answer from the last
// known state, and Available says whether that state is current.
type Provider struct {
	cfg      Config
	log      *zap.Logger
	client   kubernetes.Interface
	index    *Index
	observer PolicyObserver

	factory   informers.SharedInformerFactory
	informers map[string]cache.SharedIndexInformer // by resource name

	probeNow chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu        sync.Mutex
	started   time.Time
	synced    bool
	healthy   bool
	downSince time.Time
	lastErr   string
	failures  int               // consecutive failed probes
	watchErr  map[string]string // resource -> last list/watch error
}

// New builds a provider from the configuration (no connection is made
// before Start).
func New(cfg Config, log *zap.Logger) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, err := cfg.RESTConfig()
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return NewWithClient(cfg, client, log), nil
}

// NewWithClient builds a provider on an existing client.
func NewWithClient(cfg Config, client kubernetes.Interface, log *zap.Logger) *Provider {
	if log == nil {
		log = zap.NewNop()
	}
	return &Provider{
		cfg:      cfg,
		log:      log,
		client:   client,
		index:    NewIndex(cfg.HistoryWindow, nil),
		probeNow: make(chan struct{}, 1),
		watchErr: map[string]string{},
	}
}

// SetPolicyObserver registers the observer; call it before Start.
func (p *Provider) SetPolicyObserver(o PolicyObserver) { p.observer = o }

// Index is the IP index the provider maintains.
func (p *Provider) Index() *Index { return p.index }

// Lookup says what ip belonged to at time at and its recent history.
func (p *Provider) Lookup(ip netip.Addr, at time.Time) (Identity, History) {
	return p.index.Lookup(ip, at)
}

// Start starts the informers and waits at most sync_timeout for their first
// sync. It returns nil when the API server is unreachable: the informers
// keep retrying in the background and Available reports why context is
// missing. ctx bounds only the wait; the informers run until Shutdown.
func (p *Provider) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.mu.Lock()
	p.started = time.Now()
	p.healthy = true
	p.mu.Unlock()

	// No periodic resync: the index is fed by events, never by a timer.
	p.factory = informers.NewSharedInformerFactory(p.client, 0)
	infs := map[string]cache.SharedIndexInformer{}
	add := func(name string, inf cache.SharedIndexInformer, transform cache.TransformFunc, h cache.ResourceEventHandler) error {
		if err := inf.SetTransform(transform); err != nil {
			return fmt.Errorf("%s informer: %w", name, err)
		}
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			p.watchError(name, err)
		}); err != nil {
			return fmt.Errorf("%s informer: %w", name, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("%s informer: %w", name, err)
		}
		infs[name] = inf
		return nil
	}
	f := p.factory
	errs := []error{
		add("pods", f.Core().V1().Pods().Informer(), TransformPod, p.podHandler()),
		add("services", f.Core().V1().Services().Informer(), TransformService, handler(
			func(s *corev1.Service) { p.index.SetService(s) },
			func(s *corev1.Service) { p.index.DeleteService(s.Namespace, s.Name) })),
		add("endpointslices", f.Discovery().V1().EndpointSlices().Informer(), TransformEndpointSlice, handler(
			func(s *discoveryv1.EndpointSlice) { p.index.SetEndpointSlice(s) },
			func(s *discoveryv1.EndpointSlice) { p.index.DeleteEndpointSlice(s.Namespace, s.Name) })),
		add("nodes", f.Core().V1().Nodes().Informer(), TransformNode, handler(
			func(n *corev1.Node) { p.index.SetNode(n) },
			func(n *corev1.Node) { p.index.DeleteNode(n.Name) })),
	}
	if p.cfg.EnablePolicyCheck {
		errs = append(errs,
			add("namespaces", f.Core().V1().Namespaces().Informer(), TransformNamespace, handler(
				func(n *corev1.Namespace) {
					if p.observer != nil {
						p.observer.SetNamespace(NamespaceInfo{Name: n.Name, Labels: n.Labels})
					}
				},
				func(n *corev1.Namespace) {
					if p.observer != nil {
						p.observer.DeleteNamespace(n.Name)
					}
				})),
			add("networkpolicies", f.Networking().V1().NetworkPolicies().Informer(), TransformNetworkPolicy, handler(
				func(np *networkingv1.NetworkPolicy) {
					if p.observer != nil {
						p.observer.SetPolicy(np)
					}
				},
				func(np *networkingv1.NetworkPolicy) {
					if p.observer != nil {
						p.observer.DeletePolicy(np.Namespace, np.Name)
					}
				})))
	}
	if err := errors.Join(errs...); err != nil {
		cancel()
		return err
	}
	p.mu.Lock()
	p.informers = infs
	p.mu.Unlock()
	f.Start(runCtx.Done())

	p.wg.Add(3)
	go func() { defer p.wg.Done(); p.waitSync(runCtx) }()
	go func() { defer p.wg.Done(); p.healthLoop(runCtx) }()
	go func() { defer p.wg.Done(); p.pruneLoop(runCtx) }()

	waitCtx, wcancel := context.WithTimeout(ctx, p.cfg.SyncTimeout)
	defer wcancel()
	if !p.WaitForSync(waitCtx) {
		ok, reason := p.Available()
		if !ok {
			p.log.Warn("Kubernetes context not available yet; diagnosing without it until the API server answers",
				zap.String("reason", reason))
		}
	}
	return nil
}

// Shutdown stops the informers and background loops.
func (p *Provider) Shutdown() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.factory.Shutdown()
	p.wg.Wait()
}

// WaitForSync waits until every informer has synced once or ctx ends.
func (p *Provider) WaitForSync(ctx context.Context) bool {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		p.mu.Lock()
		s := p.synced
		p.mu.Unlock()
		if s {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

func (p *Provider) waitSync(ctx context.Context) {
	var fns []cache.InformerSynced
	for _, inf := range p.informers {
		fns = append(fns, inf.HasSynced)
	}
	if cache.WaitForCacheSync(ctx.Done(), fns...) {
		p.mu.Lock()
		p.synced = true
		p.mu.Unlock()
		p.log.Info("Kubernetes context synced", zap.Any("index", p.index.Stats()))
	}
}

// Available reports whether lookups reflect the cluster's current state,
// and why not. Lookups still answer (from the last known state) when it is
// false.
func (p *Provider) Available() (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started.IsZero() {
		return false, "kubernetes context not started"
	}
	if !p.healthy {
		return false, fmt.Sprintf("API server unreachable since %s: %s", p.downSince.UTC().Format(time.RFC3339), p.lastErr)
	}
	if !p.synced {
		var waiting []string
		for name, inf := range p.informers {
			if !inf.HasSynced() {
				w := name
				if e := p.watchErr[name]; e != "" {
					w += " (" + e + ")"
				}
				waiting = append(waiting, w)
			}
		}
		sort.Strings(waiting)
		return false, fmt.Sprintf("initial sync not complete after %s: %s",
			time.Since(p.started).Round(time.Second), strings.Join(waiting, ", "))
	}
	return true, ""
}

// watchError keeps the informer's error for Available and asks for an
// immediate probe: a broken watch is the first sign of an outage.
func (p *Provider) watchError(resource string, err error) {
	p.mu.Lock()
	p.watchErr[resource] = err.Error()
	p.mu.Unlock()
	if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return // a normal re-list, not an outage
	}
	select {
	case p.probeNow <- struct{}{}:
	default:
	}
}

// healthLoop probes /readyz, which every client may read
// (system:public-info-viewer), to detect an outage and its end.
func (p *Provider) healthLoop(ctx context.Context) {
	t := time.NewTicker(p.cfg.HealthCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.probeNow:
		}
		p.probe(ctx)
	}
}

// probeFailuresForOutage: one slow /readyz on a loaded node is not an
// outage; the first failure asks for an immediate second probe, and only two
// in a row mark the API server unreachable (and every diagnosis degraded).
const probeFailuresForOutage = 2

func (p *Provider) probe(ctx context.Context) {
	// At least 2s: a busy API server (or node) answers /readyz slowly.
	timeout := min(max(p.cfg.HealthCheckInterval, 2*time.Second), 5*time.Second)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	err := p.client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(pctx).Error()
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.failures++
		p.lastErr = err.Error()
	} else {
		p.failures = 0
	}
	switch {
	case err != nil && p.healthy && p.failures < probeFailuresForOutage:
		select { // confirm at once
		case p.probeNow <- struct{}{}:
		default:
		}
	case err != nil && p.healthy:
		p.healthy, p.downSince = false, time.Now()
		p.log.Warn("Kubernetes API server unreachable; using the last known cluster state", zap.Error(err))
	case err == nil && !p.healthy:
		p.healthy = true
		clear(p.watchErr)
		p.log.Info("Kubernetes API server reachable again", zap.Duration("outage", time.Since(p.downSince)))
	}
}

func (p *Provider) pruneLoop(ctx context.Context) {
	t := time.NewTicker(max(p.cfg.HistoryWindow/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.index.Prune()
		}
	}
}

func (p *Provider) podHandler() cache.ResourceEventHandler {
	return handler(
		func(pod *corev1.Pod) {
			p.index.SetPod(pod)
			if p.observer != nil {
				p.observer.SetPod(podInfo(pod))
			}
		},
		func(pod *corev1.Pod) {
			p.index.DeletePod(pod.Namespace, pod.Name)
			if p.observer != nil {
				p.observer.DeletePod(pod.Namespace, pod.Name)
			}
		})
}

// handler adapts typed set/delete functions, unwrapping the tombstones a
// re-list delivers for objects deleted while the watch was down.
func handler[T any](set, del func(T)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o, ok := obj.(T); ok {
				set(o)
			}
		},
		UpdateFunc: func(_, obj any) {
			if o, ok := obj.(T); ok {
				set(o)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if o, ok := obj.(T); ok {
				del(o)
			}
		},
	}
}

func podInfo(p *corev1.Pod) PodInfo {
	id := podIdentity(p)
	info := PodInfo{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels,
		Ports: id.Ports, HostNetwork: p.Spec.HostNetwork, Node: p.Spec.NodeName}
	// A finished pod's IP may already be another pod's.
	if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
		info.IPs = podIPs(p)
	}
	return info
}

// Namespaces lists the cached namespaces (policy check only).
func (p *Provider) Namespaces() []NamespaceInfo {
	if !p.cfg.EnablePolicyCheck || p.factory == nil {
		return nil
	}
	l, _ := p.factory.Core().V1().Namespaces().Lister().List(labels.Everything())
	out := make([]NamespaceInfo, len(l))
	for i, n := range l {
		out[i] = NamespaceInfo{Name: n.Name, Labels: n.Labels}
	}
	return out
}

// Pods lists the cached pods.
func (p *Provider) Pods() []PodInfo {
	if p.factory == nil {
		return nil
	}
	l, _ := p.factory.Core().V1().Pods().Lister().List(labels.Everything())
	out := make([]PodInfo, len(l))
	for i, pod := range l {
		out[i] = podInfo(pod)
	}
	return out
}

// NetworkPolicies lists the cached policies (policy check only).
func (p *Provider) NetworkPolicies() []*networkingv1.NetworkPolicy {
	if !p.cfg.EnablePolicyCheck || p.factory == nil {
		return nil
	}
	l, _ := p.factory.Networking().V1().NetworkPolicies().Lister().List(labels.Everything())
	return l
}

var _ PolicySource = (*Provider)(nil)
