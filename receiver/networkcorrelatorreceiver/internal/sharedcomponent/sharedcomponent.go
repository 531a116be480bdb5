// Package sharedcomponent lets one component instance serve several
// pipelines: the collector calls Create, Start and Shutdown once per pipeline
// that names the component, but the probes and the correlator must exist once.
// The collector's own helper of this kind is internal to its modules.
package sharedcomponent // import "github.com/network-correlator/network-correlator/receiver/networkcorrelatorreceiver/internal/sharedcomponent"

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
)

// Map holds the live shared components by key (usually the *Config pointer,
// which the collector gives every pipeline of one component ID).
type Map[K comparable, V component.Component] struct {
	mu         sync.Mutex
	components map[K]*Component[V]
}

// NewMap returns an empty Map.
func NewMap[K comparable, V component.Component]() *Map[K, V] {
	return &Map[K, V]{components: make(map[K]*Component[V])}
}

// LoadOrStore returns the component stored under key, creating it with
// create when there is none. A component leaves the map when it is shut
// down, so a later Create (a collector reload, a second test) builds a fresh one.
func (m *Map[K, V]) LoadOrStore(key K, create func() (V, error)) (*Component[V], error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.components[key]; ok {
		return c, nil
	}
	v, err := create()
	if err != nil {
		return nil, err
	}
	c := &Component[V]{value: v}
	c.remove = func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if m.components[key] == c {
			delete(m.components, key)
		}
	}
	m.components[key] = c
	return c, nil
}

// Len reports how many shared components are live.
func (m *Map[K, V]) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.components)
}

// Component wraps the shared value: the first Start starts it and every
// caller gets that Start's result; the first Shutdown stops it.
type Component[V component.Component] struct {
	value V

	startOnce sync.Once
	startErr  error
	stopOnce  sync.Once
	stopErr   error
	remove    func()
}

// Unwrap returns the shared value.
func (c *Component[V]) Unwrap() V { return c.value }

// Start starts the shared value once.
func (c *Component[V]) Start(ctx context.Context, host component.Host) error {
	c.startOnce.Do(func() { c.startErr = c.value.Start(ctx, host) })
	return c.startErr
}

// Shutdown stops the shared value once and forgets it.
func (c *Component[V]) Shutdown(ctx context.Context) error {
	c.stopOnce.Do(func() {
		c.stopErr = c.value.Shutdown(ctx)
		c.remove()
	})
	return c.stopErr
}
