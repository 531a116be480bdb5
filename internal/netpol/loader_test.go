package netpol

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
)

// manifestSet is what the corpus loader extracts from a directory of
// Kubernetes manifests: namespaces, one pod per workload, and policies.
type manifestSet struct {
	namespaces []Namespace
	pods       []Pod
	policies   []*networkingv1.NetworkPolicy
	// peer names each pod the way netpol-analyzer does: ns/name[Kind].
	peer map[string]string // "ns/pod" -> "ns/name[Kind]"
}

// workloadKinds carry a pod template at spec.template (CronJob at
// spec.jobTemplate.spec.template).
var workloadKinds = map[string]bool{
	"Deployment": true, "ReplicaSet": true, "StatefulSet": true, "DaemonSet": true,
	"Job": true, "ReplicationController": true, "CronJob": true,
}

// loadManifests reads every .yaml/.yml/.json file under dir (recursively):
// multi-document YAML, JSON, List/PodList/NamespaceList kinds. Workloads are
// expanded to one pod carrying the template's labels and container ports;
// pods with a controller owner are named after it, and only the first pod
// of each owner is kept, as netpol-analyzer keeps one representative.
func loadManifests(dir string) (*manifestSet, error) {
	ms := &manifestSet{peer: map[string]string{}}
	seenNS := map[string]bool{}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	var objs []map[string]any
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		dec := k8syaml.NewYAMLOrJSONDecoder(fh, 4096)
		for {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				fh.Close()
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if m != nil {
				objs = append(objs, m)
			}
		}
		fh.Close()
	}
	// Flatten lists; PodList items carry no kind.
	var flat []map[string]any
	for _, m := range objs {
		kind, _ := m["kind"].(string)
		if items, ok := m["items"].([]any); ok && strings.HasSuffix(kind, "List") {
			itemKind := strings.TrimSuffix(kind, "List")
			for _, it := range items {
				im, ok := it.(map[string]any)
				if !ok {
					continue
				}
				if _, ok := im["kind"]; !ok && itemKind != "" {
					im["kind"] = itemKind
				}
				flat = append(flat, im)
			}
			continue
		}
		flat = append(flat, m)
	}
	decode := func(m map[string]any, into any) error {
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		return json.Unmarshal(b, into)
	}
	addPod := func(p Pod, peer string) {
		if p.Namespace == "" {
			p.Namespace = "default"
		}
		for _, q := range ms.pods {
			if ms.peer[q.Namespace+"/"+q.Name] == peer {
				return
			}
		}
		ms.pods = append(ms.pods, p)
		ms.peer[p.Namespace+"/"+p.Name] = peer
	}
	for _, m := range flat {
		kind, _ := m["kind"].(string)
		switch {
		case kind == "Namespace":
			var n corev1.Namespace
			if err := decode(m, &n); err != nil {
				return nil, err
			}
			if !seenNS[n.Name] {
				seenNS[n.Name] = true
				ms.namespaces = append(ms.namespaces, Namespace{Name: n.Name, Labels: n.Labels})
			}
		case kind == "NetworkPolicy":
			var p networkingv1.NetworkPolicy
			if err := decode(m, &p); err != nil {
				return nil, err
			}
			if p.Namespace == "" {
				p.Namespace = "default"
			}
			ms.policies = append(ms.policies, &p)
		case kind == "Pod":
			var p corev1.Pod
			if err := decode(m, &p); err != nil {
				return nil, err
			}
			if p.Namespace == "" {
				p.Namespace = "default"
			}
			peer := p.Namespace + "/" + p.Name + "[Pod]"
			for _, o := range p.OwnerReferences {
				// Only workload owners group pods (static pods are owned by
				// their Node); an owner without a kind is named as a Pod, as
				// netpol-analyzer does.
				if o.Controller != nil && *o.Controller && (workloadKinds[o.Kind] || o.Kind == "") {
					kind := o.Kind
					if kind == "" {
						kind = "Pod"
					}
					peer = p.Namespace + "/" + o.Name + "[" + kind + "]"
				}
			}
			addPod(PodFromAPI(&p), peer)
		case workloadKinds[kind]:
			var w struct {
				Metadata struct {
					Name, Namespace string
				}
				Spec struct {
					Template    corev1.PodTemplateSpec
					JobTemplate struct {
						Spec struct{ Template corev1.PodTemplateSpec }
					}
				}
			}
			if err := decode(m, &w); err != nil {
				return nil, err
			}
			tpl := w.Spec.Template
			if kind == "CronJob" {
				tpl = w.Spec.JobTemplate.Spec.Template
			}
			ns := w.Metadata.Namespace
			if ns == "" {
				ns = "default"
			}
			pod := corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec}
			pod.Name, pod.Namespace = w.Metadata.Name, ns
			addPod(PodFromAPI(&pod), ns+"/"+w.Metadata.Name+"["+kind+"]")
		}
	}
	return ms, nil
}
