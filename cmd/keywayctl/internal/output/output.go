// Package output prints resources the way `keywayctl get` shows them: a
// table for people, YAML that `keywayctl apply -f` reads back, JSON for
// scripts, and kind/name lines for shell loops.
package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"keyway.dev/keywayctl/internal/resource"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// Format is an output format, as given to -o.
type Format string

// Formats.
const (
	Table Format = "table"
	YAML  Format = "yaml"
	JSON  Format = "json"
	Name  Format = "name"
)

// ParseFormat checks an -o value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(s)); f {
	case Table, YAML, JSON, Name:
		return f, nil
	case "wide":
		return Table, nil
	}
	return "", fmt.Errorf("unknown output format %q; want table, yaml, json or name", s)
}

// Options say how to print.
type Options struct {
	Format Format
	// List is set when the resources answer a list request: JSON prints
	// {"items": [...]} even for one or none, and an empty table says so.
	List bool
	// Now is the time ages are measured from.
	Now time.Time
}

// Write prints resources in the format asked for.
func Write(w io.Writer, rs []*policyv1.Resource, o Options) error {
	switch o.Format {
	case YAML:
		return writeYAML(w, rs)
	case JSON:
		return writeJSON(w, rs, o.List)
	case Name:
		for _, r := range rs {
			if _, err := fmt.Fprintln(w, resource.Ref(r)); err != nil {
				return err
			}
		}
		return nil
	}
	return writeTable(w, rs, o.Now)
}

// memberJSON is the resource as a manifest holds it: the oneof member alone
// (apiVersion, kind, metadata, spec), compact.
func memberJSON(r *policyv1.Resource) ([]byte, error) {
	m := resource.Member(r)
	if m == nil {
		return nil, fmt.Errorf("resource with no kind set")
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", resource.Ref(r), err)
	}
	// protojson varies its whitespace on purpose; compact for stable output.
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeJSON prints one resource as an object, a list as {"items": [...]},
// each resource in the shape `apply -f` reads.
func writeJSON(w io.Writer, rs []*policyv1.Resource, list bool) error {
	items := make([]json.RawMessage, 0, len(rs))
	for _, r := range rs {
		b, err := memberJSON(r)
		if err != nil {
			return err
		}
		items = append(items, b)
	}
	var v any = struct {
		Items []json.RawMessage `json:"items"`
	}{items}
	if !list && len(items) == 1 {
		v = items[0]
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// writeYAML prints a YAML stream, one document per resource, that `apply -f`
// reads back. Multi-line strings (PEM blocks) are printed as literal blocks.
func writeYAML(w io.Writer, rs []*policyv1.Resource) error {
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	for _, r := range rs {
		b, err := memberJSON(r)
		if err != nil {
			return err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil { // JSON is YAML
			return fmt.Errorf("converting %s to YAML: %w", resource.Ref(r), err)
		}
		blockStyle(&doc)
		if err := enc.Encode(&doc); err != nil {
			return err
		}
	}
	return enc.Close()
}

// blockStyle undoes the flow style and quoting JSON arrives with. The
// encoder still quotes a string that would otherwise read as another type
// ("1.2", "true"), because the nodes keep their !!str tag.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && strings.Contains(n.Value, "\n") {
		n.Style = yaml.LiteralStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// columns of each kind's table, after NAME and before REVISION and AGE.
var columns = map[string]struct {
	headers []string
	row     func(*policyv1.Resource) []string
}{
	"Service": {
		headers: []string{"ADDRESS", "PROTOCOL"},
		row: func(r *policyv1.Resource) []string {
			s := r.GetService().GetSpec()
			addr := s.GetAddress()
			if len(s.GetEndpoints()) > 0 {
				addr = strings.Join(s.GetEndpoints(), ",")
			}
			return []string{orDash(addr), or(s.GetProtocol(), "http1")}
		},
	},
	"Route": {
		headers: []string{"HOST", "PATH", "METHODS", "SERVICE"},
		row: func(r *policyv1.Resource) []string {
			s := r.GetRoute().GetSpec()
			return []string{or(s.GetHost(), "*"), orDash(s.GetPath()), or(strings.Join(s.GetMethods(), ","), "*"), orDash(s.GetService())}
		},
	},
	"PolicyBinding": {
		headers: []string{"TARGET", "POLICY"},
		row: func(r *policyv1.Resource) []string {
			s := r.GetPolicyBinding().GetSpec()
			target := "-"
			if t := s.GetTargetRef(); t.GetName() != "" {
				target = or(t.GetKind(), "Service") + "/" + t.GetName()
			}
			return []string{target, orDash(s.GetPolicyRef().GetName())}
		},
	},
	"Listener": {
		headers: []string{"ADDRESS", "HOSTS", "CLIENT-AUTH"},
		row: func(r *policyv1.Resource) []string {
			s := r.GetListener().GetSpec()
			var hosts, auth []string
			for _, h := range s.GetHosts() {
				hosts = append(hosts, h.GetHostnames()...)
				auth = append(auth, or(h.GetClientAuth(), "none"))
			}
			return []string{orDash(s.GetAddress()), or(strings.Join(hosts, ","), "-"), or(strings.Join(slices.Compact(auth), ","), "-")}
		},
	},
}

// writeTable prints one table per kind present. When several kinds are
// present, names are printed as kind/name, as `kubectl get all` does.
func writeTable(w io.Writer, rs []*policyv1.Resource, now time.Time) error {
	byKind := map[string][]*policyv1.Resource{}
	present := 0
	for _, r := range rs {
		k, ok := resource.Of(r)
		if !ok {
			continue
		}
		if len(byKind[k.Name]) == 0 {
			present++
		}
		byKind[k.Name] = append(byKind[k.Name], r)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	first := true
	for _, k := range resource.Kinds {
		rows := byKind[k.Name]
		if len(rows) == 0 {
			continue
		}
		if !first {
			fmt.Fprintln(tw)
		}
		first = false
		col := columns[k.Name]
		fmt.Fprintln(tw, strings.Join(append(append([]string{"NAME"}, col.headers...), "REVISION", "AGE"), "\t"))
		for _, r := range rows {
			meta := resource.Metadata(r)
			name := meta.GetName()
			if present > 1 {
				name = resource.Ref(r)
			}
			age := "-"
			if t := meta.GetUpdateTime(); t != nil {
				age = Age(now.Sub(t.AsTime()))
			}
			cells := append(append([]string{name}, col.row(r)...), strconv.FormatUint(meta.GetRevision(), 10), age)
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
	}
	return tw.Flush()
}

// Age is a short duration as the AGE column shows it: 45s, 12m, 5h, 40d, 2y.
func Age(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	case d < 2*365*24*time.Hour:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
	return strconv.Itoa(int(d.Hours()/24/365)) + "y"
}

// Span is a duration in words, rounded down to its largest unit: "40 days",
// "3 hours", "1 minute".
func Span(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	n, unit := int(d.Seconds()), "second"
	switch {
	case d >= 48*time.Hour:
		n, unit = int(d.Hours()/24), "day"
	case d >= 2*time.Hour:
		n, unit = int(d.Hours()), "hour"
	case d >= 2*time.Minute:
		n, unit = int(d.Minutes()), "minute"
	}
	if n != 1 {
		unit += "s"
	}
	return strconv.Itoa(n) + " " + unit
}

func or(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func orDash(s string) string { return or(s, "-") }
