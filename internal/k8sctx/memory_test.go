package k8sctx

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"
)

// realisticPod is a Deployment pod as the API serves it: managed fields, a
// kubectl last-applied annotation, two containers with env, resources,
// probes and mounts, a projected token volume, conditions and statuses.
func realisticPod(i int) *corev1.Pod {
	ctrl := true
	ns := fmt.Sprintf("team-%d", i%50)
	name := fmt.Sprintf("web-%d-5d8f7c9b4-%05d", i%200, i)
	fields := metav1.NewFieldsV1(`{"f:metadata":{"f:generateName":{},"f:labels":{".":{},"f:app":{},"f:pod-template-hash":{},"f:tier":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"0b9c\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:env":{".":{},"k:{\"name\":\"LOG_LEVEL\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:ports":{".":{},"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{},"f:name":{},"f:protocol":{}}},"f:resources":{".":{},"f:limits":{".":{},"f:memory":{}},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{}}}`)
	status := metav1.NewFieldsV1(`{"f:status":{"f:conditions":{"k:{\"type\":\"ContainersReady\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Initialized\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:phase":{},"f:podIP":{},"f:podIPs":{".":{},"k:{\"ip\":\"10.1.2.3\"}":{".":{},"f:ip":{}}},"f:startTime":{}}}`)
	now := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var env []corev1.EnvVar
	for j := 0; j < 10; j++ {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", j), Value: fmt.Sprintf("value-%d-%d", i, j)})
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstrFromString("http")}},
		PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3}
	container := func(cname string, port int32) corev1.Container {
		return corev1.Container{
			Name: cname, Image: "registry.example.com/team/" + cname + ":v1.2.3", Env: env,
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
			Resources: corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			},
			LivenessProbe: probe, ReadinessProbe: probe,
			VolumeMounts:           []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
			TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy: corev1.PullIfNotPresent,
		}
	}
	cstatus := func(cname string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: cname, Ready: true, RestartCount: int32(i % 3), Image: "registry.example.com/team/" + cname + ":v1.2.3",
			ImageID:     "registry.example.com/team/" + cname + "@sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945",
			ContainerID: "containerd://8a3e5f1c2b7d4e6f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f",
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, GenerateName: name[:len(name)-5], Namespace: ns,
			UID:             types.UID(fmt.Sprintf("5f0c1a2b-3c4d-4e5f-8a9b-%012d", i)),
			ResourceVersion: fmt.Sprint(1000000 + i), CreationTimestamp: now,
			Labels: map[string]string{"app": fmt.Sprintf("web-%d", i%200), "pod-template-hash": "5d8f7c9b4", "tier": "frontend"},
			Annotations: map[string]string{
				"kubectl.kubernetes.io/restartedAt":                "2026-01-01T00:00:00Z",
				"kubectl.kubernetes.io/last-applied-configuration": fields.GetRawString() + status.GetRawString(),
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("web-%d-5d8f7c9b4", i%200),
				UID: "0b9c5e3a-1111-2222-3333-444455556666", Controller: &ctrl, BlockOwnerDeletion: &ctrl}},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: fields},
				{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &now, FieldsType: "FieldsV1", FieldsV1: status, Subresource: "status"},
			},
		},
		Spec: corev1.PodSpec{
			NodeName: fmt.Sprintf("node-%d", i%100), ServiceAccountName: "default", RestartPolicy: corev1.RestartPolicyAlways,
			Containers: []corev1.Container{container("app", 8080), container("sidecar", 9090)},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"},
						Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}}},
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
			},
		},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning, HostIP: fmt.Sprintf("192.168.%d.%d", i%100/250, i%100), StartTime: &now,
			PodIP:  fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256),
			PodIPs: []corev1.PodIP{{IP: fmt.Sprintf("10.%d.%d.%d", 1+i/65536, i/256%256, i%256)}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			},
			ContainerStatuses: []corev1.ContainerStatus{cstatus("app"), cstatus("sidecar")},
			QOSClass:          corev1.PodQOSBurstable,
		},
	}
}

// heapFor returns the live heap bytes retained by what load keeps.
func heapFor(load func() any) (uint64, any) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	kept := load()
	runtime.GC()
	runtime.ReadMemStats(&after)
	return after.HeapAlloc - before.HeapAlloc, kept
}

// loadPods stores n pods in an informer store (and the IP index), through
// the transform when transform is set, as the informer does.
func loadPods(n int, transform bool) any {
	store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	x := NewIndex(time.Minute, nil)
	for i := range n {
		var obj any = realisticPod(i)
		if transform {
			obj, _ = TransformPod(obj)
		}
		store.Add(obj)
		x.SetPod(obj.(*corev1.Pod))
	}
	return []any{store, x}
}

// TestMemoryPer10kPods measures the heap held per pod with and without the
// transform, cache and IP index together.
func TestMemoryPer10kPods(t *testing.T) {
	if testing.Short() {
		t.Skip("memory measurement skipped in -short mode")
	}
	const n = 10000
	raw, keep := heapFor(func() any { return loadPods(n, false) })
	runtime.KeepAlive(keep)
	keep = nil
	stripped, keep := heapFor(func() any { return loadPods(n, true) })
	runtime.KeepAlive(keep)
	t.Logf("10k pods: untransformed %.1f MiB (%d B/pod), transformed %.1f MiB (%d B/pod), %.1fx smaller",
		float64(raw)/(1<<20), raw/n, float64(stripped)/(1<<20), stripped/n, float64(raw)/float64(stripped))
	// Bounds well above what was measured, to catch a transform that stops
	// stripping, not to benchmark.
	if stripped/n > 5000 {
		t.Errorf("transformed pods hold %d B/pod, want at most 5000", stripped/n)
	}
	if 2*raw < 5*stripped {
		t.Errorf("transform saves too little: %d B/pod raw vs %d B/pod transformed", raw/n, stripped/n)
	}
}

// BenchmarkLoadPods reports heap bytes per pod held after loading 10k
// transformed pods.
func BenchmarkLoadPods(b *testing.B) {
	const n = 10000
	for b.Loop() {
		held, keep := heapFor(func() any { return loadPods(n, true) })
		runtime.KeepAlive(keep)
		b.ReportMetric(float64(held)/n, "heapB/pod")
	}
}

func intstrFromString(s string) intstr.IntOrString { return intstr.FromString(s) }

// BenchmarkLookup measures the correlator's hot path: an IP lookup in an
// index of 10k pods.
func BenchmarkLookup(b *testing.B) {
	x := NewIndex(time.Minute, nil)
	var ips []netip.Addr
	for i := range 10000 {
		p, _ := TransformPod(realisticPod(i))
		x.SetPod(p.(*corev1.Pod))
		ips = append(ips, netip.MustParseAddr(p.(*corev1.Pod).Status.PodIP))
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if id, _ := x.Lookup(ips[i%len(ips)], now); !id.Known() {
			b.Fatal("unknown")
		}
		i++
	}
}
