//go:build linux

// Package apitest runs a real kube-apiserver backed by a real etcd for tests.
//
// Both processes listen on free loopback ports inside a temporary directory,
// with a private CA, a static token file and service-account keys generated
// here. The server has no kubelet, scheduler or controllers: pods stay
// Pending until a test sets their status, nobody creates EndpointSlices or
// default service accounts, and namespaces never finish terminating.
//
// The kube-apiserver binary comes from $KUBE_APISERVER, or from the cache
// filled by scripts/kube/build-apiserver.sh (run here when it is missing);
// etcd is Debian's etcd-server. Tests skip only when etcd is not installed or
// the Go module proxy cannot be reached to build the server.
package apitest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AdminToken authenticates as a member of system:masters (bypasses RBAC).
const AdminToken = "network-correlator-admin-token"

// Authorization modes.
const (
	RBAC        = "RBAC"
	AlwaysAllow = "AlwaysAllow"
)

// Options tunes the server.
type Options struct {
	// Authorization is RBAC (default) or AlwaysAllow.
	Authorization string
}

// Server is a running etcd + kube-apiserver pair.
type Server struct {
	t       testing.TB
	dir     string
	apiBin  string
	etcdBin string
	opts    Options

	etcdURL string
	apiPort int
	caPEM   []byte

	mu   sync.Mutex
	etcd *proc
	api  *proc
}

// proc is a started process; done is closed once it has been reaped.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, SIGKILL after 10s, and waits.
func (p *proc) stop() {
	if p == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Start starts etcd and kube-apiserver and stops both in t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Authorization == "" {
		opts.Authorization = RBAC
	}
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (Debian: apt-get install etcd-server): " + err.Error())
	}
	s := &Server{t: t, dir: t.TempDir(), etcdBin: etcdBin, apiBin: apiServerBinary(t), opts: opts}
	t.Cleanup(s.stopAll)
	if err := s.writeFiles(); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, 3)
	s.etcdURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	s.apiPort = ports[2]
	if err := s.startEtcd(ports[1]); err != nil {
		t.Fatal(err)
	}
	if err := s.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	return s
}

// Host is the API server's https URL.
func (s *Server) Host() string { return "https://127.0.0.1:" + strconv.Itoa(s.apiPort) }

// Config returns a rest.Config authenticating with token (AdminToken for an
// administrator).
func (s *Server) Config(token string) *rest.Config {
	return &rest.Config{
		Host:            s.Host(),
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.caPEM},
		QPS:             100,
		Burst:           200,
	}
}

// AdminClient is a clientset authenticated as an administrator.
func (s *Server) AdminClient() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(s.Config(AdminToken))
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// WriteKubeconfig writes a kubeconfig for token and returns its path.
func (s *Server) WriteKubeconfig(token string) string {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: s.Host(), CertificateAuthorityData: s.caPEM}
	cfg.AuthInfos["test"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	cfg.CurrentContext = "test"
	f, err := os.CreateTemp(s.dir, "kubeconfig-*")
	if err != nil {
		s.t.Fatal(err)
	}
	f.Close()
	if err := clientcmd.WriteToFile(*cfg, f.Name()); err != nil {
		s.t.Fatal(err)
	}
	return f.Name()
}

// StopAPIServer stops kube-apiserver (etcd keeps running with its data).
func (s *Server) StopAPIServer() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.api.stop()
	s.api = nil
}

// StartAPIServer starts kube-apiserver on the same port and etcd, and waits
// until it is ready.
func (s *Server) StartAPIServer() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.api != nil {
		return errors.New("kube-apiserver already running")
	}
	f := func(name string) string { return filepath.Join(s.dir, name) }
	args := []string{
		"--etcd-servers=" + s.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(s.apiPort),
		"--tls-cert-file=" + f("serving.crt"),
		"--tls-private-key-file=" + f("serving.key"),
		"--token-auth-file=" + f("tokens.csv"),
		"--authorization-mode=" + s.opts.Authorization,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + f("sa.key"),
		"--service-account-signing-key-file=" + f("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--endpoint-reconciler-type=none",
		// No controller-manager creates default service accounts.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--cert-dir=" + f("certs"),
		"--v=0",
	}
	cmd, err := s.spawn("kube-apiserver", s.apiBin, args)
	if err != nil {
		return err
	}
	s.api = cmd
	if err := s.waitReady(cmd, 90*time.Second); err != nil {
		cmd.stop()
		s.api = nil
		return fmt.Errorf("kube-apiserver: %w\n%s", err, tail(f("kube-apiserver.log"), 30))
	}
	return nil
}

func (s *Server) startEtcd(peerPort int) error {
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=default",
		"--data-dir=" + filepath.Join(s.dir, "etcd"),
		"--listen-client-urls=" + s.etcdURL,
		"--advertise-client-urls=" + s.etcdURL,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--log-level=warn",
	}
	cmd, err := s.spawn("etcd", s.etcdBin, args)
	if err != nil {
		return err
	}
	s.etcd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(s.etcdURL + "/health")
		if err == nil {
			body := new(bytes.Buffer)
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.Contains(body.String(), "true") {
				return nil
			}
		}
		if cmd.exited() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcd did not become healthy\n%s", tail(filepath.Join(s.dir, "etcd.log"), 30))
}

// spawn starts a process in its own process group that the kernel kills if
// the test binary dies first.
func (s *Server) spawn(name, bin string, args []string) (*proc, error) {
	logf, err := os.OpenFile(filepath.Join(s.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	// Pdeathsig fires when the forking thread exits, not the test process,
	// and the runtime ends every thread a goroutine leaves locked (the
	// probes and the lab discard theirs): fork from a thread held until
	// the process ends, or the server dies in the middle of a test.
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	if err := <-started; err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

func (s *Server) stopAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.api.stop()
	s.api = nil
	s.etcd.stop()
	s.etcd = nil
}

func (s *Server) waitReady(cmd *proc, timeout time.Duration) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.caPEM)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if cmd.exited() {
			return errors.New("exited before it was ready")
		}
		req, _ := http.NewRequest(http.MethodGet, s.Host()+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+AdminToken)
		resp, err := hc.Do(req)
		if err == nil {
			body := new(bytes.Buffer)
			body.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("readyz %d: %s", resp.StatusCode, body.String())
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("not ready after %s: %s", timeout, last)
}

// writeFiles creates the CA, the serving certificate, the service-account
// signing key and the static token file.
func (s *Server) writeFiles() error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "network-correlator-test-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.ParseIP("10.96.0.1")},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := map[string][]byte{
		"ca.crt":      s.caPEM,
		"serving.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"serving.key": ecKeyPEM(srvKey),
		"sa.key":      ecKeyPEM(saKey),
		"tokens.csv":  []byte(AdminToken + ",admin,admin-uid,\"system:masters\"\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(s.dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func ecKeyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func freePorts(t testing.TB, n int) []int {
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var buildOnce struct {
	sync.Once
	path string
	err  error
	skip string
}

// apiServerBinary finds kube-apiserver, building it with the project's script
// when it is not cached yet (a cold build takes several minutes).
func apiServerBinary(t testing.TB) string {
	if p := os.Getenv("KUBE_APISERVER"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			buildOnce.err = err
			return
		}
		// A cold build takes minutes: stop it before the test binary's
		// deadline so the failure says what to do instead of a timeout panic.
		deadline := time.Now().Add(30 * time.Minute)
		if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
			if td, ok := d.Deadline(); ok {
				deadline = td.Add(-30 * time.Second)
			}
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts/kube/build-apiserver.sh"))
		cmd.Stderr = &stderr
		// The script and its go build die together, with the test too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
		began := time.Now()
		out, err := cmd.Output()
		if ctx.Err() != nil {
			buildOnce.err = fmt.Errorf("building kube-apiserver did not finish before the test deadline: run scripts/kube/build-apiserver.sh first, or raise -timeout")
			return
		}
		if err != nil {
			if !proxyReachable() {
				buildOnce.skip = "kube-apiserver is not built (`make kube-apiserver`) and the Go module proxy is unreachable to build it: " + err.Error()
				return
			}
			buildOnce.err = fmt.Errorf("scripts/kube/build-apiserver.sh: %w\n%s", err, lastLines(stderr.String(), 30))
			return
		}
		buildOnce.path = strings.TrimSpace(string(out))
		if d := time.Since(began); d > 5*time.Second {
			t.Logf("built %s with scripts/kube/build-apiserver.sh in %s", buildOnce.path, d.Round(time.Second))
		}
	})
	if buildOnce.skip != "" {
		t.Skip(buildOnce.skip)
	}
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func proxyReachable() bool {
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		return false
	}
	for _, p := range strings.FieldsFunc(strings.TrimSpace(string(out)), func(r rune) bool { return r == ',' || r == '|' }) {
		if !strings.HasPrefix(p, "http") {
			continue
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		resp, err := hc.Get(strings.TrimRight(p, "/") + "/k8s.io/kubernetes/@v/list")
		if err == nil {
			resp.Body.Close()
			return resp.StatusCode == 200
		}
	}
	return false
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts/kube/build-apiserver.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/kube/build-apiserver.sh not found above the test's directory")
		}
		dir = parent
	}
}
