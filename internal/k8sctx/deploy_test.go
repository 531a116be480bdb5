package k8sctx

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/network-correlator/network-correlator/internal/k8sctx/apitest"
)

// manifests decodes every object of a file under deploy/.
func manifests(t *testing.T, name string) []runtime.Object {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []runtime.Object
	for {
		doc, err := r.Read()
		if err != nil {
			break
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		out = append(out, obj)
	}
	return out
}

// TestDaemonSetManifest checks what the DaemonSet promises: no privileged
// mode, exactly the documented capabilities, the node name from the
// downward API, the RBAC service account.
func TestDaemonSetManifest(t *testing.T) {
	objs := manifests(t, "daemonset.yaml")
	if len(objs) != 1 {
		t.Fatalf("daemonset.yaml holds %d objects", len(objs))
	}
	ds, ok := objs[0].(*appsv1.DaemonSet)
	if !ok {
		t.Fatalf("daemonset.yaml holds a %T", objs[0])
	}
	spec := ds.Spec.Template.Spec
	if spec.ServiceAccountName != "network-correlator" {
		t.Errorf("serviceAccountName = %q", spec.ServiceAccountName)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatalf("securityContext = %+v", sc)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities.drop = %v", sc.Capabilities.Drop)
	}
	want := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYSLOG", "SYS_PTRACE"}
	if !slices.Equal(sc.Capabilities.Add, want) {
		t.Errorf("capabilities.add = %v, want %v", sc.Capabilities.Add, want)
	}
	var nodeEnv bool
	for _, e := range c.Env {
		if e.Name == NodeNameEnv && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeEnv = true
		}
	}
	if !nodeEnv {
		t.Errorf("no %s env from spec.nodeName", NodeNameEnv)
	}
	var btf bool
	for _, v := range spec.Volumes {
		btf = btf || v.HostPath != nil && v.HostPath.Path == "/sys/kernel/btf"
	}
	if !btf {
		t.Error("no /sys/kernel/btf host mount")
	}
}

// TestRBACAgainstAPIServer applies deploy/ to a real API server with RBAC
// authorization, runs the informers with the service account's own token
// and checks they sync, while anything beyond get/list/watch of the
// watched resources is forbidden.
func TestRBACAgainstAPIServer(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Authorization: apitest.RBAC})
	admin := srv.AdminClient()
	ctx := context.Background()

	var sa *corev1.ServiceAccount
	for _, obj := range manifests(t, "rbac.yaml") {
		var err error
		switch o := obj.(type) {
		case *corev1.Namespace:
			_, err = admin.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		case *corev1.ServiceAccount:
			sa, err = admin.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			for _, r := range o.Rules {
				if !slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
					t.Errorf("ClusterRole rule %v grants %v, want only get, list, watch", r.Resources, r.Verbs)
				}
			}
			_, err = admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = admin.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("unexpected %T in rbac.yaml", obj)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The API server validates the rest of deploy/ without creating it.
	for _, name := range []string{"configmap.yaml", "daemonset.yaml"} {
		for _, obj := range manifests(t, name) {
			var err error
			dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				_, err = admin.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, dry)
			case *appsv1.DaemonSet:
				_, err = admin.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, dry)
			default:
				t.Fatalf("unexpected %T in %s", obj, name)
			}
			if err != nil {
				t.Errorf("%s rejected by the API server: %v", name, err)
			}
		}
	}

	exp := int64(600)
	tr, err := admin.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	saClient := kubernetes.NewForConfigOrDie(srv.Config(tr.Status.Token))

	// The RBAC authorizer may take a moment to see the new binding.
	eventually(t, 10*time.Second, "service account can list pods", func() (bool, string) {
		_, err := saClient.CoreV1().Pods("").List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, errString(err)
	})

	cfg := testConfig()
	p := startProvider(t, cfg, saClient)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if !p.WaitForSync(sctx) {
		_, reason := p.Available()
		t.Fatalf("informers did not sync with the service account's rights: %s", reason)
	}
	if ok, reason := p.Available(); !ok {
		t.Errorf("Available = false: %s", reason)
	}

	forbidden := []struct {
		name string
		do   func() error
	}{
		{"list secrets", func() error {
			_, err := saClient.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list configmaps", func() error {
			_, err := saClient.CoreV1().ConfigMaps("network-correlator").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create pod", func() error {
			_, err := saClient.CoreV1().Pods("network-correlator").Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}},
			}, metav1.CreateOptions{})
			return err
		}},
		{"delete namespace", func() error {
			return saClient.CoreV1().Namespaces().Delete(ctx, "default", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		}},
		{"patch pod status", func() error {
			_, err := saClient.CoreV1().Pods("default").UpdateStatus(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "default"}}, metav1.UpdateOptions{})
			return err
		}},
	}
	for _, f := range forbidden {
		if err := f.do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as the service account: %v, want forbidden", f.name, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestDaemonSetCapabilitiesProven runs commands with exactly the
// DaemonSet's capabilities (setpriv, as root) and without one of them, to
// show each of SYS_PTRACE and SYSLOG is needed for what the manifest says.
func TestDaemonSetCapabilitiesProven(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands with chosen capabilities")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("needs setpriv (util-linux): " + err.Error())
	}
	ds := manifests(t, "daemonset.yaml")[0].(*appsv1.DaemonSet)
	var caps []string
	for _, c := range ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		caps = append(caps, strings.ToLower(string(c)))
	}
	without := func(drop string) []string {
		return slices.DeleteFunc(slices.Clone(caps), func(c string) bool { return c == drop })
	}
	// run runs a shell command with exactly caps (as root, no others).
	run := func(caps []string, script string) (string, error) {
		set := "-all"
		for _, c := range caps {
			set += ",+" + c
		}
		out, err := exec.Command(setpriv, "--inh-caps="+set, "--ambient-caps="+set, "--bounding-set="+set,
			"sh", "-c", script).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	// A process with all of root's capabilities stands in for a pod
	// sandbox or container runtime.
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	openNS := "exec 3</proc/" + strconv.Itoa(sleeper.Process.Pid) + "/ns/net"

	t.Run("SYS_PTRACE opens other processes' network namespaces", func(t *testing.T) {
		if out, err := run(caps, openNS); err != nil {
			t.Errorf("with the DaemonSet's capabilities: %v %s", err, out)
		}
		if _, err := run(without("sys_ptrace"), openNS); err == nil {
			t.Error("without SYS_PTRACE the namespace opened too: the capability is not needed")
		}
	})

	t.Run("SYSLOG shows kallsyms addresses", func(t *testing.T) {
		if b, _ := os.ReadFile("/proc/sys/kernel/kptr_restrict"); strings.TrimSpace(string(b)) == "2" {
			t.Skip("kernel.kptr_restrict=2 hides addresses from everyone")
		}
		first := "head -n1 /proc/kallsyms | cut -d' ' -f1"
		out, err := run(caps, first)
		if err != nil || strings.Trim(out, "0") == "" {
			t.Errorf("with the DaemonSet's capabilities: %q %v", out, err)
		}
		out, err = run(without("syslog"), first)
		if err != nil || strings.Trim(out, "0") != "" {
			t.Errorf("without SYSLOG kallsyms shows %q (%v), want zeros", out, err)
		}
	})
}
