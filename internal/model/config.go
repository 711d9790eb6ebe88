package model

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/structpb"
)

// configObject reads a policy's config (a google.protobuf.Struct, that is a
// JSON object) field by field, reporting unknown keys and wrong JSON types at
// their exact path.
type configObject struct {
	c      *checker
	at     fieldPath
	fields map[string]*structpb.Value
}

// presence says what a config field held.
type presence int

const (
	absent  presence = iota // not there, or null
	present                 // there, with the expected type
	invalid                 // there, wrong type or value; already reported
)

// unknownKeys reports every key that is not one of known, suggesting the
// known key it most likely means.
func (o configObject) unknownKeys(known []string, what string) {
	keys := make([]string, 0, len(o.fields))
	for k := range o.fields {
		if !slices.Contains(known, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		msg := fmt.Sprintf("unknown field %q", k)
		if s := DidYouMean(k, known); s != "" {
			msg += fmt.Sprintf("; did you mean %q? (field names are case-sensitive)", s)
		} else {
			msg += fmt.Sprintf(" in %s; remove it", what)
		}
		o.c.errorf(o.at.Child(k), "%s; %s takes: %s", msg, what, strings.Join(known, ", "))
	}
}

// value returns the field's value, nil when it is absent or null: YAML
// "trustedCA:" with nothing after it means "not given".
func (o configObject) value(key string) *structpb.Value {
	v := o.fields[key]
	if _, isNull := v.GetKind().(*structpb.Value_NullValue); isNull {
		return nil
	}
	return v
}

func (o configObject) wrongType(key string, v *structpb.Value, want, fix string) {
	msg := fmt.Sprintf("%s must be %s, got %s", key, want, jsonType(v))
	if fix != "" {
		msg += "; " + fix
	}
	o.c.errorf(o.at.Child(key), "%s", msg)
}

func (o configObject) boolean(key string) (bool, presence) {
	v := o.value(key)
	if v == nil {
		return false, absent
	}
	b, ok := v.GetKind().(*structpb.Value_BoolValue)
	if !ok {
		fix := "write true or false"
		if s, isString := v.GetKind().(*structpb.Value_StringValue); isString && (strings.EqualFold(s.StringValue, "true") || strings.EqualFold(s.StringValue, "false")) {
			fix = fmt.Sprintf("write %s without quotes", strings.ToLower(s.StringValue))
		}
		o.wrongType(key, v, "a boolean (true or false)", fix)
		return false, invalid
	}
	return b.BoolValue, present
}

func (o configObject) str(key string) (string, presence) {
	v := o.value(key)
	if v == nil {
		return "", absent
	}
	s, ok := v.GetKind().(*structpb.Value_StringValue)
	if !ok {
		o.wrongType(key, v, "a string", "")
		return "", invalid
	}
	return s.StringValue, present
}

// listItem is a string from a list, with its index for error paths.
type listItem struct {
	index int
	value string
}

// stringList reads a list of strings; elements of another type are reported and
// left out.
func (o configObject) stringList(key string) ([]listItem, presence) {
	v := o.value(key)
	if v == nil {
		return nil, absent
	}
	l, ok := v.GetKind().(*structpb.Value_ListValue)
	if !ok {
		fix := ""
		if s, isString := v.GetKind().(*structpb.Value_StringValue); isString {
			fix = fmt.Sprintf("write a list, e.g. [%q]", s.StringValue)
		}
		o.wrongType(key, v, "a list of strings", fix)
		return nil, invalid
	}
	items := make([]listItem, 0, len(l.ListValue.GetValues()))
	state := present
	for i, e := range l.ListValue.GetValues() {
		s, ok := e.GetKind().(*structpb.Value_StringValue)
		if !ok {
			o.c.errorf(o.at.Child(key).Index(i), "%s[%d] must be a string, got %s", key, i, jsonType(e))
			state = invalid
			continue
		}
		items = append(items, listItem{i, s.StringValue})
	}
	return items, state
}

func (o configObject) object(key string) (configObject, presence) {
	v := o.value(key)
	if v == nil {
		return configObject{}, absent
	}
	s, ok := v.GetKind().(*structpb.Value_StructValue)
	if !ok {
		o.wrongType(key, v, "an object", "")
		return configObject{}, invalid
	}
	return configObject{c: o.c, at: o.at.Child(key), fields: s.StructValue.GetFields()}, present
}

// jsonType names the JSON type of a value, for messages.
func jsonType(v *structpb.Value) string {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		s := k.StringValue
		if len(s) > 40 {
			s = s[:40] + "…"
		}
		return fmt.Sprintf("a string (%q)", s)
	case *structpb.Value_NumberValue:
		return fmt.Sprintf("a number (%v)", k.NumberValue)
	case *structpb.Value_BoolValue:
		return fmt.Sprintf("a boolean (%t)", k.BoolValue)
	case *structpb.Value_ListValue:
		return "a list"
	case *structpb.Value_StructValue:
		return "an object"
	}
	return "null"
}

// DidYouMean returns the candidate that name most likely misspells: the same
// ignoring case, '_' and '-', or within two edits. It returns "" when none is
// close. keywayctl uses it for manifest fields, validation for config keys.
func DidYouMean(name string, candidates []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	n := norm(name)
	best, bestDist := "", 3
	for _, cand := range candidates {
		cn := norm(cand)
		if cn == n {
			return cand
		}
		if d := editDistance(n, cn); d < bestDist && d < len(cn)/2 {
			best, bestDist = cand, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
