package k8sctx

import (
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Kind says what an IP belongs to.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindPod
	KindService
	KindNode
)

func (k Kind) String() string {
	switch k {
	case KindPod:
		return "pod"
	case KindService:
		return "service"
	case KindNode:
		return "node"
	}
	return "unknown"
}

// Workload is the controller behind a pod. A ReplicaSet named
// "<deployment>-<pod-template-hash>" whose pods carry that pod-template-hash
// label is reported as its Deployment without watching ReplicaSets (the
// naming convention the Deployment controller guarantees); any other owner is
// reported as it is (StatefulSet, DaemonSet, Job, a bare ReplicaSet, ...).
type Workload struct {
	Kind string // "Deployment", "StatefulSet", ...; empty for a bare pod
	Name string
}

func (w Workload) String() string {
	if w.Kind == "" {
		return ""
	}
	return w.Kind + "/" + w.Name
}

// ContainerPort is a port declared by a container.
type ContainerPort struct {
	Container string
	Name      string
	Port      int32
	Protocol  corev1.Protocol
}

// Identity is what an IP belongs to at a given time. Maps and slices are
// shared with the index: read, never modify.
type Identity struct {
	Kind      Kind
	Namespace string // pods and services
	Name      string // pod, service or node name
	UID       string
	Workload  Workload // pods
	Node      string   // pods: the node they run on; nodes: the node itself
	Labels    map[string]string
	Ports     []ContainerPort // pods
	// HostNetwork pods share their node's IP; they are found by name, and
	// their node answers for the IP.
	HostNetwork bool
	Phase       corev1.PodPhase
	// DeletedAt is set when the pod owned the IP at the asked time but has
	// been deleted since.
	DeletedAt time.Time
	Service   *ServiceState // KindService only
	// NotReadySince, for nodes: since when the Ready condition has not been
	// True (its last transition; zero while Ready or when not reported),
	// with the condition's reason.
	NotReadySince  time.Time
	NotReadyReason string
}

// Known reports whether the IP was attributed to anything.
func (id Identity) Known() bool { return id.Kind != KindUnknown }

// ServiceState is a service and the endpoints its EndpointSlices list.
type ServiceState struct {
	Type       corev1.ServiceType
	ClusterIPs []netip.Addr
	Ports      []corev1.ServicePort
	// HasSelector is false for services whose endpoints are managed by hand.
	HasSelector bool
	Selector    map[string]string
	Created     time.Time
	// Slices is the number of EndpointSlices seen for the service.
	Slices      int
	Ready       []EndpointState
	NotReady    []EndpointState // neither ready nor terminating
	Terminating []EndpointState
}

// EndpointState is one endpoint address of a service.
type EndpointState struct {
	IP   netip.Addr
	Pod  string // targetRef name when it is a pod
	Node string
	// Serving: a terminating endpoint that still accepts connections.
	Serving bool
	Slice   string // the EndpointSlice listing it
	// Since is when the index saw the endpoint enter its condition; zero
	// when it was already so at first sight.
	Since time.Time
}

// EventKind names a lifecycle event in an IP's history.
type EventKind string

const (
	// EventIPPreviousOwner: the IP belonged to another pod until Time.
	EventIPPreviousOwner EventKind = "ip-previous-owner"
	// EventPodDeleted: the pod was deleted at Time.
	EventPodDeleted EventKind = "pod-deleted"
	// EventContainerRestarted: a container of the pod restarted; Time is
	// when the previous instance terminated, Reason/ExitCode why.
	EventContainerRestarted EventKind = "container-restarted"
	// EventContainerTerminated: a container stopped and has not (yet) been
	// restarted.
	EventContainerTerminated EventKind = "container-terminated"
)

// Event is one entry of an IP's recent history.
type Event struct {
	Time      time.Time
	Kind      EventKind
	Namespace string
	Pod       string
	Container string // container events
	Reason    string // e.g. OOMKilled, Error, Completed
	ExitCode  int32
	// RestartCount is the container's restart count after the event.
	RestartCount int32
}

// History lists events for an IP and the pod that owned it, oldest first,
// within the index's history window.
type History []Event
