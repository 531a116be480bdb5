package k8sctx

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informer transforms keep only what the index and the policy evaluator
// read, so the caches hold a fraction of each object: no managedFields, no
// annotations (kubectl's last-applied configuration alone often doubles a
// pod), no volumes, env, resources, probes or conditions. Each returns a new
// object and is idempotent, as the informers require. Anything else (such as
// a DeletedFinalStateUnknown tombstone) passes through.

func meta(m *metav1.ObjectMeta, labels bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name:              m.Name,
		Namespace:         m.Namespace,
		UID:               m.UID,
		ResourceVersion:   m.ResourceVersion,
		CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp,
	}
	if labels {
		out.Labels = m.Labels
	}
	return out
}

// TransformPod strips a pod to identity, labels, owner, node, ports, IPs and
// container termination states.
func TransformPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{ObjectMeta: meta(&p.ObjectMeta, true)}
	for _, ref := range p.OwnerReferences {
		if ref.Controller != nil && *ref.Controller {
			out.OwnerReferences = []metav1.OwnerReference{{Kind: ref.Kind, Name: ref.Name, Controller: ref.Controller}}
			break
		}
	}
	out.Spec.NodeName = p.Spec.NodeName
	out.Spec.HostNetwork = p.Spec.HostNetwork
	out.Spec.InitContainers = containers(p.Spec.InitContainers, true)
	out.Spec.Containers = containers(p.Spec.Containers, false)
	out.Status.Phase = p.Status.Phase
	out.Status.PodIP = p.Status.PodIP
	if len(p.Status.PodIPs) > 1 || len(p.Status.PodIPs) == 1 && p.Status.PodIPs[0].IP != p.Status.PodIP {
		out.Status.PodIPs = p.Status.PodIPs
	}
	out.Status.InitContainerStatuses = statuses(p.Status.InitContainerStatuses)
	out.Status.ContainerStatuses = statuses(p.Status.ContainerStatuses)
	return out, nil
}

// containers keeps names and ports; init containers only when they declare
// ports (sidecars).
func containers(cs []corev1.Container, onlyWithPorts bool) []corev1.Container {
	var out []corev1.Container
	for _, c := range cs {
		if onlyWithPorts && len(c.Ports) == 0 {
			continue
		}
		nc := corev1.Container{Name: c.Name}
		for _, p := range c.Ports {
			nc.Ports = append(nc.Ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
		}
		out = append(out, nc)
	}
	return out
}

func statuses(ss []corev1.ContainerStatus) []corev1.ContainerStatus {
	if len(ss) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, len(ss))
	for i, s := range ss {
		out[i] = corev1.ContainerStatus{Name: s.Name, RestartCount: s.RestartCount, Ready: s.Ready}
		out[i].State.Terminated = terminated(s.State.Terminated)
		out[i].LastTerminationState.Terminated = terminated(s.LastTerminationState.Terminated)
	}
	return out
}

func terminated(t *corev1.ContainerStateTerminated) *corev1.ContainerStateTerminated {
	if t == nil {
		return nil
	}
	return &corev1.ContainerStateTerminated{ExitCode: t.ExitCode, Signal: t.Signal, Reason: t.Reason, FinishedAt: t.FinishedAt}
}

// TransformNamespace keeps name and labels.
func TransformNamespace(obj any) (any, error) {
	n, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: meta(&n.ObjectMeta, true)}, nil
}

// TransformNetworkPolicy keeps the spec.
func TransformNetworkPolicy(obj any) (any, error) {
	p, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return obj, nil
	}
	out := &networkingv1.NetworkPolicy{ObjectMeta: meta(&p.ObjectMeta, false), Spec: p.Spec}
	out.Generation = p.Generation
	return out, nil
}

// TransformService keeps type, cluster IPs, ports and selector.
func TransformService(obj any) (any, error) {
	s, ok := obj.(*corev1.Service)
	if !ok {
		return obj, nil
	}
	out := &corev1.Service{ObjectMeta: meta(&s.ObjectMeta, true)}
	out.Spec.Type = s.Spec.Type
	out.Spec.ClusterIP = s.Spec.ClusterIP
	if len(s.Spec.ClusterIPs) > 1 || len(s.Spec.ClusterIPs) == 1 && s.Spec.ClusterIPs[0] != s.Spec.ClusterIP {
		out.Spec.ClusterIPs = s.Spec.ClusterIPs
	}
	out.Spec.Selector = s.Spec.Selector
	for _, p := range s.Spec.Ports {
		out.Spec.Ports = append(out.Spec.Ports, corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port, TargetPort: p.TargetPort})
	}
	return out, nil
}

// TransformEndpointSlice keeps the owning service's name, addresses,
// conditions, pod references and nodes.
func TransformEndpointSlice(obj any) (any, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	out := &discoveryv1.EndpointSlice{ObjectMeta: meta(&s.ObjectMeta, false), AddressType: s.AddressType}
	if name, ok := s.Labels[discoveryv1.LabelServiceName]; ok {
		out.Labels = map[string]string{discoveryv1.LabelServiceName: name}
	}
	out.Endpoints = make([]discoveryv1.Endpoint, len(s.Endpoints))
	for i, e := range s.Endpoints {
		ne := discoveryv1.Endpoint{Addresses: e.Addresses, Conditions: e.Conditions, NodeName: e.NodeName}
		if e.TargetRef != nil {
			ne.TargetRef = &corev1.ObjectReference{Kind: e.TargetRef.Kind, Namespace: e.TargetRef.Namespace, Name: e.TargetRef.Name}
		}
		out.Endpoints[i] = ne
	}
	out.Ports = s.Ports
	return out, nil
}

// TransformNode keeps name, labels, addresses and the Ready condition.
func TransformNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{ObjectMeta: meta(&n.ObjectMeta, true)}
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			out.Status.Addresses = append(out.Status.Addresses, a)
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, Reason: c.Reason,
				LastTransitionTime: c.LastTransitionTime}}
		}
	}
	return out, nil
}
