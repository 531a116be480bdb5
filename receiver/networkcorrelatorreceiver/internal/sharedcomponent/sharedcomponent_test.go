package sharedcomponent

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
)

type counting struct {
	starts, stops int
	startErr      error
}

func (c *counting) Start(context.Context, component.Host) error { c.starts++; return c.startErr }
func (c *counting) Shutdown(context.Context) error              { c.stops++; return nil }

func TestSharedAcrossPipelines(t *testing.T) {
	m := NewMap[string, *counting]()
	created := 0
	create := func() (*counting, error) { created++; return &counting{}, nil }

	a, err := m.LoadOrStore("id", create)
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.LoadOrStore("id", create)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || created != 1 {
		t.Fatalf("want one shared instance, created %d (same: %v)", created, a == b)
	}
	host := componenttest.NewNopHost()
	for _, c := range []*Component[*counting]{a, b} {
		if err := c.Start(context.Background(), host); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []*Component[*counting]{a, b} {
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if v := a.Unwrap(); v.starts != 1 || v.stops != 1 {
		t.Fatalf("starts=%d stops=%d, want 1 and 1", v.starts, v.stops)
	}
	if m.Len() != 0 {
		t.Fatalf("shut down component still in the map")
	}
	c, err := m.LoadOrStore("id", create)
	if err != nil {
		t.Fatal(err)
	}
	if c == a || created != 2 {
		t.Fatalf("a Create after Shutdown must build a fresh instance")
	}
}

func TestStartErrorGoesToEveryCaller(t *testing.T) {
	m := NewMap[int, *counting]()
	boom := errors.New("no BTF")
	c, err := m.LoadOrStore(1, func() (*counting, error) { return &counting{startErr: boom}, nil })
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.Start(context.Background(), componenttest.NewNopHost()); !errors.Is(err, boom) {
			t.Fatalf("Start = %v, want %v", err, boom)
		}
	}
	if c.Unwrap().starts != 1 {
		t.Fatalf("started %d times", c.Unwrap().starts)
	}
}

func TestCreateError(t *testing.T) {
	m := NewMap[int, *counting]()
	boom := errors.New("bad")
	if _, err := m.LoadOrStore(1, func() (*counting, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if m.Len() != 0 {
		t.Fatal("failed create stored")
	}
}
