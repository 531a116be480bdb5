package netpol

import (
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// requirement is one compiled term of a label selector. matchLabels entries
// become opEquals so that every term can be explained the same way.
type requirement struct {
	key    string
	op     metav1.LabelSelectorOperator
	values []string // sorted
}

const opEquals metav1.LabelSelectorOperator = "="

// selector is a compiled metav1.LabelSelector. An empty selector matches
// everything; a nil *selector stands for an absent selector and is handled by
// the caller, because absent and empty differ in NetworkPolicy peers.
type selector struct {
	reqs []requirement // sorted by key then op, for stable explanations
}

func compileSelector(ls *metav1.LabelSelector, field string) (*selector, error) {
	s := &selector{}
	keys := make([]string, 0, len(ls.MatchLabels))
	for k := range ls.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ls.MatchLabels[k]
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("%s.matchLabels: invalid key %q: %s", field, k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("%s.matchLabels[%s]: invalid value %q: %s", field, k, v, strings.Join(errs, "; "))
		}
		s.reqs = append(s.reqs, requirement{key: k, op: opEquals, values: []string{v}})
	}
	for i, e := range ls.MatchExpressions {
		f := fmt.Sprintf("%s.matchExpressions[%d]", field, i)
		if errs := validation.IsQualifiedName(e.Key); len(errs) > 0 {
			return nil, fmt.Errorf("%s: invalid key %q: %s", f, e.Key, strings.Join(errs, "; "))
		}
		switch e.Operator {
		case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
			if len(e.Values) == 0 {
				return nil, fmt.Errorf("%s: operator %s needs at least one value", f, e.Operator)
			}
		case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
			if len(e.Values) > 0 {
				return nil, fmt.Errorf("%s: operator %s takes no values", f, e.Operator)
			}
		default:
			return nil, fmt.Errorf("%s: unsupported operator %q (want In, NotIn, Exists or DoesNotExist)", f, e.Operator)
		}
		vals := append([]string(nil), e.Values...)
		for _, v := range vals {
			if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
				return nil, fmt.Errorf("%s: invalid value %q: %s", f, v, strings.Join(errs, "; "))
			}
		}
		sort.Strings(vals)
		s.reqs = append(s.reqs, requirement{key: e.Key, op: e.Operator, values: vals})
	}
	sort.SliceStable(s.reqs, func(i, j int) bool { return s.reqs[i].key < s.reqs[j].key })
	return s, nil
}

func (r *requirement) matches(labels map[string]string) bool {
	v, ok := labels[r.key]
	switch r.op {
	case opEquals:
		return ok && v == r.values[0]
	case metav1.LabelSelectorOpIn:
		return ok && containsSorted(r.values, v)
	case metav1.LabelSelectorOpNotIn:
		return !ok || !containsSorted(r.values, v)
	case metav1.LabelSelectorOpExists:
		return ok
	case metav1.LabelSelectorOpDoesNotExist:
		return !ok
	}
	return false
}

func containsSorted(vals []string, v string) bool {
	i := sort.SearchStrings(vals, v)
	return i < len(vals) && vals[i] == v
}

func (s *selector) empty() bool { return len(s.reqs) == 0 }

func (s *selector) matches(labels map[string]string) bool {
	for i := range s.reqs {
		if !s.reqs[i].matches(labels) {
			return false
		}
	}
	return true
}

// failing returns the requirements the labels do not satisfy.
func (s *selector) failing(labels map[string]string) []requirement {
	var out []requirement
	for i := range s.reqs {
		if !s.reqs[i].matches(labels) {
			out = append(out, s.reqs[i])
		}
	}
	return out
}

// String renders the requirement the way kubectl selectors read.
func (r requirement) String() string {
	switch r.op {
	case opEquals:
		return r.key + "=" + r.values[0]
	case metav1.LabelSelectorOpIn:
		if len(r.values) == 1 {
			return r.key + "=" + r.values[0]
		}
		return r.key + " in (" + strings.Join(r.values, ",") + ")"
	case metav1.LabelSelectorOpNotIn:
		return r.key + " notin (" + strings.Join(r.values, ",") + ")"
	case metav1.LabelSelectorOpExists:
		return r.key
	case metav1.LabelSelectorOpDoesNotExist:
		return "!" + r.key
	}
	return r.key + "?"
}

func (s *selector) String() string {
	if s.empty() {
		return "<all>"
	}
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// LabelChange is a minimal edit of one object's labels.
type LabelChange struct {
	Set    map[string]string `json:"set,omitempty"`
	Remove []string          `json:"remove,omitempty"`
}

func (c LabelChange) size() int { return len(c.Set) + len(c.Remove) }

// String renders the change as kubectl label arguments.
func (c LabelChange) String() string {
	var parts []string
	for _, k := range sortedKeys(c.Set) {
		parts = append(parts, k+"="+c.Set[k])
	}
	for _, k := range c.Remove {
		parts = append(parts, k+"-")
	}
	return strings.Join(parts, " ")
}

// describe renders the change for a sentence about an object that has the
// given labels: "add label `a=b` to", "set label `a=b` (now c) on",
// "remove label `c` from", joined with "and".
func (c LabelChange) describe(current map[string]string) string {
	var parts, add, set []string
	for _, k := range sortedKeys(c.Set) {
		if old, ok := current[k]; ok {
			set = append(set, "`"+k+"="+c.Set[k]+"` (now "+old+")")
		} else {
			add = append(add, k+"="+c.Set[k])
		}
	}
	if len(add) > 0 {
		parts = append(parts, "add label"+plural(len(add))+" `"+strings.Join(add, ",")+"` to")
	}
	if len(set) > 0 {
		parts = append(parts, "set label"+plural(len(set))+" "+strings.Join(set, ", ")+" on")
	}
	if len(c.Remove) > 0 {
		parts = append(parts, "remove label"+plural(len(c.Remove))+" `"+strings.Join(c.Remove, ",")+"` from")
	}
	return strings.Join(parts, " and ")
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// labelFix computes the smallest label edit that makes labels satisfy s, or
// ok=false when the requirements contradict each other (e.g. k=a and k notin (a)).
func (s *selector) labelFix(labels map[string]string) (LabelChange, bool) {
	var c LabelChange
	want := map[string]string{}
	for _, r := range s.failing(labels) {
		switch r.op {
		case opEquals, metav1.LabelSelectorOpIn:
			if w, ok := want[r.key]; ok && !containsSorted(r.values, w) {
				return c, false
			}
			want[r.key] = r.values[0]
		case metav1.LabelSelectorOpExists:
			if _, ok := want[r.key]; !ok {
				want[r.key] = "true"
			}
		case metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpDoesNotExist:
			c.Remove = append(c.Remove, r.key)
		}
	}
	for _, k := range c.Remove {
		if _, ok := want[k]; ok {
			return c, false
		}
	}
	if len(want) > 0 {
		c.Set = want
	}
	// Verify: the edited labels must satisfy every requirement, including
	// the ones that held before the edit.
	if !s.matches(applyChange(labels, c)) {
		return c, false
	}
	sort.Strings(c.Remove)
	return c, true
}

func applyChange(labels map[string]string, c LabelChange) map[string]string {
	out := make(map[string]string, len(labels)+len(c.Set))
	for k, v := range labels {
		out[k] = v
	}
	for _, k := range c.Remove {
		delete(out, k)
	}
	for k, v := range c.Set {
		out[k] = v
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// formatLabels renders labels as k=v,k=v in key order.
func formatLabels(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
