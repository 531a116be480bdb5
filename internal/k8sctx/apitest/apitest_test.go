//go:build linux

package apitest

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestServerLifecycle(t *testing.T) {
	for _, mode := range []string{RBAC, AlwaysAllow} {
		t.Run(mode, func(t *testing.T) {
			var pids []int
			t.Run("run", func(t *testing.T) {
				s := Start(t, Options{Authorization: mode})
				pids = []int{s.etcd.cmd.Process.Pid, s.api.cmd.Process.Pid}
				ctx := context.Background()
				c := s.AdminClient()
				if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{}); err != nil {
					t.Fatal(err)
				}
				// An unknown token is refused; the kubeconfig works.
				bad := kubernetes.NewForConfigOrDie(s.Config("wrong"))
				if _, err := bad.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
					t.Errorf("wrong token: %v", err)
				}
				rc, err := clientcmd.BuildConfigFromFlags("", s.WriteKubeconfig(AdminToken))
				if err != nil {
					t.Fatal(err)
				}
				// The data survives an API server restart (same etcd, same port).
				s.StopAPIServer()
				if err := s.StartAPIServer(); err != nil {
					t.Fatal(err)
				}
				if _, err := kubernetes.NewForConfigOrDie(rc).CoreV1().Namespaces().Get(ctx, "x", metav1.GetOptions{}); err != nil {
					t.Errorf("after restart: %v", err)
				}
			})
			// Cleanup stopped both processes.
			for _, pid := range pids {
				if err := exec.Command("kill", "-0", strconv.Itoa(pid)).Run(); err == nil {
					t.Errorf("process %d still running after the test", pid)
				}
			}
		})
	}
}
