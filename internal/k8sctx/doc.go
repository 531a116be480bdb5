// Package k8sctx is the cluster edge of the correlator: client-go shared
// informers (pods, services, endpointslices, nodes; namespaces and
// networkpolicies with the policy check) feed an IP index that names the
// pod, service or node behind an address at a given time, with the recent
// lifecycle history behind a failure: earlier owners of a reused IP, deleted
// pods, container restarts with their reason and exit code.
//
// Informer transforms strip each object to what is read here (about 4 KiB
// per pod in cache and index together). The provider never blocks its
// callers on the API server: Start waits at most sync_timeout, lookups answer
// from the last known state, and Available says when that state may be stale
// and why; informers reconnect by themselves.
//
// The NetworkPolicy evaluator (internal/netpol) stays free of client-go: it
// is fed through PolicyObserver and PolicySource, in plain structs and the
// networking/v1 policy type.
package k8sctx
