package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"keyway.dev/internal/certs"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
	"keyway.dev/keywayctl/internal/resource"
)

// Parse reads the documents of one manifest; name is used in positions. A
// JSON manifest is read by the same YAML parser (JSON is YAML), so its
// positions are exact too.
func Parse(name string, data []byte) ([]*Document, error) {
	docs, errs := parse(name, data)
	if len(errs) == 0 {
		errs = linkFlex(docs)
	}
	return docs, errors.Join(errs...)
}

// parse reads the documents of one manifest, without the checks that span
// files.
func parse(name string, data []byte) ([]*Document, []error) {
	if trimmed := bytes.TrimSpace(data); strings.EqualFold(filepath.Ext(name), ".json") ||
		len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		// JSON allows tabs as whitespace where YAML does not; a raw tab
		// cannot occur inside a JSON string, so this changes no value,
		// and keeps columns.
		data = bytes.ReplaceAll(data, []byte("\t"), []byte(" "))
	}
	p := &parser{file: name, lines: strings.Split(string(data), "\n"), size: len(data), budget: 4*len(data) + minValues}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var root yaml.Node
		err := dec.Decode(&root)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.errs = append(p.errs, p.syntaxError(err))
			break // the decoder cannot resynchronise after a syntax error
		}
		if len(root.Content) == 0 {
			continue // an empty document, as after a trailing "---"
		}
		n := root.Content[0]
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
			continue
		}
		p.topLevel(n)
	}
	return p.docs, p.errs
}

// yamlLine finds the line in the YAML package's error messages.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) syntaxError(err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{Pos: Position{File: p.file, Line: line}, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{Pos: Position{File: p.file}, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
}

// parser reads the documents of one file.
type parser struct {
	file string
	docs []*Document
	errs []error
	// pending are the notes of the Flex document being read.
	pending []Note
	// lines are the file's lines, to point into a block scalar.
	lines []string
	size  int // of the file, in bytes
	// budget is how many more values the file may expand to. Aliases
	// (*name) make a few bytes stand for a whole tree, and aliases of
	// aliases for exponentially many ("billion laughs"); without a bound a
	// 600-byte file keeps the reader busy for minutes.
	budget int
}

// minValues, plus four values per byte of the file, is how many values the
// documents of one file may expand to through aliases: far more than
// anchors reused as configuration shares need.
const minValues = 10000

// spend counts one value converted; once the file's budget is spent it
// reports why (once) and the conversion stops.
func (c *converter) spend(n *yaml.Node) bool {
	c.p.budget--
	if c.p.budget == -1 {
		c.p.errorf(n, "aliases (*name) expand this file to more than %d values; write the repeated values out, or alias fewer levels deep", 4*c.p.size+minValues)
	}
	return c.p.budget >= 0
}

func (p *parser) pos(n *yaml.Node) Position {
	return Position{File: p.file, Line: n.Line, Column: n.Column}
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	// A value is quoted up to a prefix: a manifest may hold megabytes.
	args = limits.QuoteArgs(format, args)
	// Field paths (%s) are made of the keys written, which may be as long
	// as a value.
	for i, a := range args {
		if s, ok := a.(string); ok && len(s) > maxPathBytes {
			cut := maxPathBytes
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
			args[i] = s[:cut] + fmt.Sprintf("…(%d bytes)", len(s))
		}
	}
	p.errs = append(p.errs, &Error{Pos: p.pos(n), Msg: fmt.Sprintf(format, args...)})
}

// maxPathBytes bounds a field path quoted in a message; the paths of real
// manifests are far shorter.
const maxPathBytes = 256

// topLevel reads one document: a resource, a list {"items": [...]} as
// `get -o json` prints it, or a sequence of resources (a JSON array).
func (p *parser) topLevel(n *yaml.Node) {
	n = deref(n)
	switch n.Kind {
	case yaml.SequenceNode:
		for _, item := range n.Content {
			p.resource(deref(item))
		}
		return
	case yaml.MappingNode:
		if items := lookup(n, "items"); items != nil && lookup(n, "kind") == nil {
			items = deref(items)
			if items.Kind != yaml.SequenceNode {
				p.errorf(items, "items: want a list of resources")
				return
			}
			for _, item := range items.Content {
				p.resource(deref(item))
			}
			return
		}
		p.resource(n)
	default:
		p.errorf(n, "want a resource (a mapping with apiVersion, kind, metadata and spec), got %s", describe(n))
	}
}

// resource reads one resource document.
func (p *parser) resource(n *yaml.Node) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "want a resource (a mapping with apiVersion, kind, metadata and spec), got %s", describe(n))
		return
	}
	doc := &Document{Pos: p.pos(n), fields: map[string]Position{}}

	kindNode := lookup(n, "kind")
	if kindNode == nil {
		// The wire shape, {"policyBinding": {...}}, as buf curl sends it.
		if len(n.Content) == 2 {
			if k, ok := resource.ByMember(n.Content[0].Value); ok {
				p.decode(doc, k, deref(n.Content[1]))
				return
			}
		}
		p.errorf(n, "missing kind; want %s", kindList())
		return
	}
	kindNode = deref(kindNode)
	if av := lookup(n, "apiVersion"); av != nil && deref(av).Value == resource.FlexAPIVersion {
		p.flexDoc(n, kindNode)
		return
	}
	k, ok := resource.ByName(kindNode.Value)
	if !ok || kindNode.Kind != yaml.ScalarNode {
		msg := fmt.Sprintf("unknown kind %s; want %s", limits.Quote(kindNode.Value), kindList())
		names := make([]string, len(resource.Kinds))
		for i, kk := range resource.Kinds {
			names[i] = kk.Name
		}
		if s := model.DidYouMean(kindNode.Value, names); s != "" {
			msg = fmt.Sprintf("unknown kind %s; did you mean %q?", limits.Quote(kindNode.Value), s)
		}
		p.errorf(kindNode, "%s", msg)
		return
	}

	avNode := lookup(n, "apiVersion")
	if avNode == nil {
		p.errorf(n, "%s: missing apiVersion; want %s", k.Name, resource.APIVersion)
		return
	}
	avNode = deref(avNode)
	if avNode.Value != resource.APIVersion {
		p.errorf(avNode, "unknown apiVersion %q for kind %s; want %s (or %s for Flex Gateway's ApiInstance, Service and PolicyBinding)", avNode.Value, k.Name, resource.APIVersion, resource.FlexAPIVersion)
		return
	}
	p.decode(doc, k, n)
}

// decode converts the member's YAML to JSON, recording field positions,
// and unmarshals it with protojson.
func (p *parser) decode(doc *Document, k resource.Kind, n *yaml.Node) {
	doc.Pos = p.pos(n)
	c := &converter{p: p, fields: doc.fields}
	nerrs := len(p.errs)
	v := c.message(n, k.Descriptor(), "")
	if len(p.errs) > nerrs {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		p.errorf(n, "%s: converting to JSON: %v", k.Name, err)
		return
	}
	msg := k.New()
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, msg); err != nil {
		// The walk above checks what protojson checks, so this is rare;
		// protojson's own positions are into the generated JSON, so
		// they are left out.
		p.errorf(n, "%s: %s", k.Name, strings.TrimPrefix(err.Error(), "proto: "))
		return
	}
	doc.Resource = k.Wrap(msg)
	p.docs = append(p.docs, doc)
}

// converter turns a YAML tree into values encoding/json marshals to what
// protojson expects, checking it against the message descriptor as it
// goes so that problems are reported at their line.
type converter struct {
	p      *parser
	fields map[string]Position
}

func (c *converter) record(path string, n *yaml.Node) {
	if _, ok := c.fields[path]; !ok {
		c.fields[path] = c.p.pos(n)
	}
}

// message converts a mapping to a message of type md.
func (c *converter) message(n *yaml.Node, md protoreflect.MessageDescriptor, path string) any {
	n = deref(n)
	if !c.spend(n) {
		return nil
	}
	c.record(path, n)
	if isNull(n) {
		return nil
	}
	if md.FullName().Parent() == "google.protobuf" {
		return c.wellKnown(n, md, path)
	}
	if n.Kind != yaml.MappingNode {
		c.p.errorf(n, "%s: want a mapping (%s), got %s", pathOr(path, string(md.Name())), md.Name(), describe(n))
		return nil
	}
	out := map[string]any{}
	for key, val := range c.pairs(n, path) {
		fd := md.Fields().ByJSONName(key.Value)
		if fd == nil {
			fd = md.Fields().ByName(protoreflect.Name(key.Value))
		}
		if fd == nil {
			hint := ""
			if s := model.DidYouMean(key.Value, fieldNames(md)); s != "" {
				hint = fmt.Sprintf("; did you mean %q?", s)
			}
			c.p.errorf(key, "%s: unknown field%s (%s has %s)", join(path, key.Value), hint, md.Name(), fieldList(md))
			continue
		}
		fp := join(path, fd.JSONName())
		c.record(fp, fieldNode(key, val))
		out[fd.JSONName()] = c.field(val, fd, fp)
	}
	return out
}

// fieldNode is the node a field's position points at: the value when it is
// a scalar, else the key (a block mapping or sequence starts on the next
// line).
func fieldNode(key, val *yaml.Node) *yaml.Node {
	if deref(val).Kind == yaml.ScalarNode {
		return val
	}
	return key
}

// field converts the value of a field: a map, a list or a single value.
func (c *converter) field(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) any {
	n = deref(n)
	switch {
	case isNull(n):
		return nil
	case fd.IsMap():
		if n.Kind != yaml.MappingNode {
			c.p.errorf(n, "%s: want a mapping, got %s", path, describe(n))
			return nil
		}
		out := map[string]any{}
		for key, val := range c.pairs(n, path) {
			kp := path + "." + key.Value
			c.record(kp, fieldNode(key, val))
			c.record(path+"["+strconv.Quote(key.Value)+"]", fieldNode(key, val))
			out[key.Value] = c.single(val, fd.MapValue(), kp)
		}
		return out
	case fd.IsList():
		if n.Kind != yaml.SequenceNode {
			c.p.errorf(n, "%s: want a list, got %s", path, describe(n))
			return nil
		}
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			ip := path + "[" + strconv.Itoa(i) + "]"
			c.record(ip, item)
			out = append(out, c.single(item, fd, ip))
		}
		return out
	}
	return c.single(n, fd, path)
}

// single converts one value of a field's type.
func (c *converter) single(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) any {
	n = deref(n)
	if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
		return c.message(n, fd.Message(), path)
	}
	if !c.spend(n) {
		return nil
	}
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		c.p.errorf(n, "%s: want %s, got %s", path, kindWord(fd.Kind()), describe(n))
		return nil
	}
	tag := n.ShortTag()
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind:
		switch tag {
		case "!!str", "!!timestamp", "!!binary":
			c.commentedPEM(n, path)
			return n.Value
		}
		c.p.errorf(n, "%s: want a string, got %s; quote it: %q", path, describe(n), n.Value)
	case protoreflect.BoolKind:
		if tag == "!!bool" {
			b, err := strconv.ParseBool(n.Value)
			if err == nil {
				return b
			}
		}
		c.p.errorf(n, "%s: want true or false, got %s", path, describe(n))
	case protoreflect.EnumKind:
		if tag == "!!str" || tag == "!!int" {
			return c.number(n, path, tag)
		}
		c.p.errorf(n, "%s: want an enum name or number, got %s", path, describe(n))
	case protoreflect.FloatKind, protoreflect.DoubleKind:
		if tag == "!!int" || tag == "!!float" {
			return c.number(n, path, tag)
		}
		c.p.errorf(n, "%s: want a number, got %s", path, describe(n))
	default: // integers
		switch tag {
		case "!!int":
			return c.number(n, path, tag)
		case "!!str":
			if _, err := strconv.ParseInt(n.Value, 10, 64); err == nil {
				return n.Value // protojson accepts quoted integers, as for 64-bit values
			}
			if _, err := strconv.ParseUint(n.Value, 10, 64); err == nil {
				return n.Value
			}
		}
		c.p.errorf(n, "%s: want an integer, got %s", path, describe(n))
	}
	return nil
}

// wellKnown converts google.protobuf types: Struct, Value and ListValue are
// free-form JSON; Timestamp and Duration are strings.
func (c *converter) wellKnown(n *yaml.Node, md protoreflect.MessageDescriptor, path string) any {
	switch md.Name() {
	case "Struct":
		if n.Kind != yaml.MappingNode {
			c.p.errorf(n, "%s: want a mapping, got %s", path, describe(n))
			return nil
		}
	case "ListValue":
		if n.Kind != yaml.SequenceNode {
			c.p.errorf(n, "%s: want a list, got %s", path, describe(n))
			return nil
		}
	case "Timestamp", "Duration":
		if n.Kind != yaml.ScalarNode {
			c.p.errorf(n, "%s: want a string, got %s", path, describe(n))
			return nil
		}
		return n.Value
	}
	return c.free(n, path)
}

// free converts any YAML value to JSON, recording the position of every
// nested path.
func (c *converter) free(n *yaml.Node, path string) any {
	n = deref(n)
	if !c.spend(n) {
		return nil
	}
	c.record(path, n)
	switch n.Kind {
	case yaml.MappingNode:
		out := map[string]any{}
		for key, val := range c.pairs(n, path) {
			kp := join(path, key.Value)
			c.record(kp, fieldNode(key, val))
			out[key.Value] = c.free(val, kp)
		}
		return out
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			out = append(out, c.free(item, path+"["+strconv.Itoa(i)+"]"))
		}
		return out
	}
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return nil
	case "!!bool":
		b, err := strconv.ParseBool(n.Value)
		if err != nil {
			c.p.errorf(n, "%s: want true or false, got %q", path, n.Value)
		}
		return b
	case "!!int", "!!float":
		return c.number(n, path, tag)
	case "!!str", "!!timestamp", "!!binary":
		c.commentedPEM(n, path)
		return n.Value
	default:
		c.p.errorf(n, "%s: unsupported YAML tag %s", path, n.Tag)
		return nil
	}
}

// pemFields are the fields that hold PEM, in resources and in policy
// configs.
var pemFields = map[string]bool{"crt": true, "key": true, "trustedCA": true, "clientCAs": true}

// commentedPEM refuses a PEM field whose block is commented out with '#',
// as Flex Gateway's samples print them ("# -----BEGIN CERTIFICATE-----"):
// in a block scalar the '#' is text, so the block would not be read. The
// error points at the line itself when the value is a literal block (|),
// whose lines are the file's. The policy service refuses it too, for
// other clients; here the user gets the line of the file.
func (c *converter) commentedPEM(n *yaml.Node, path string) {
	if !pemFields[path[strings.LastIndexByte(path, '.')+1:]] {
		return
	}
	line, text := certs.CommentedPEM(n.Value)
	if line == 0 {
		return
	}
	pos := c.p.pos(n)
	where := fmt.Sprintf(" (line %d of the value)", line)
	if n.Style&yaml.LiteralStyle != 0 {
		// Content line k of a literal block is the file's line k after
		// its indicator ("crt: |").
		if l := n.Line + line; l-1 < len(c.p.lines) && strings.Contains(c.p.lines[l-1], strings.TrimSpace(text)) {
			pos = Position{File: c.p.file, Line: l, Column: strings.Index(c.p.lines[l-1], "#") + 1}
			where = ""
		}
	}
	c.p.errs = append(c.p.errs, &Error{Pos: pos, Msg: fmt.Sprintf("%s: the PEM block is commented out with '#'%s: %q; %s",
		path, where, limitLine(strings.TrimSpace(text)), certs.CommentedPEMFix(n.Value))})
}

// limitLine cuts a quoted line of the user's file for a message.
func limitLine(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// number converts a YAML number (or a quoted one, for enums and integers)
// to a JSON number.
func (c *converter) number(n *yaml.Node, path, tag string) any {
	switch tag {
	case "!!str":
		return n.Value
	case "!!int":
		if i, err := strconv.ParseInt(n.Value, 0, 64); err == nil {
			return json.Number(strconv.FormatInt(i, 10))
		}
		if u, err := strconv.ParseUint(n.Value, 0, 64); err == nil {
			return json.Number(strconv.FormatUint(u, 10))
		}
	case "!!float":
		f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
		if err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
		}
	}
	c.p.errorf(n, "%s: %q is not a number JSON can hold", path, n.Value)
	return nil
}

// pairs yields the key and value nodes of a mapping, resolving merge keys
// ("<<: *defaults") and reporting duplicate and non-scalar keys.
func (c *converter) pairs(n *yaml.Node, path string) func(yield func(key, val *yaml.Node) bool) {
	return func(yield func(key, val *yaml.Node) bool) {
		seen := map[string]bool{}
		var merged []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := deref(n.Content[i]), n.Content[i+1]
			if key.Kind != yaml.ScalarNode {
				c.p.errorf(key, "%s: a key must be a string, got %s", pathOr(path, "document"), describe(key))
				continue
			}
			if key.ShortTag() == "!!merge" {
				merged = append(merged, deref(val))
				continue
			}
			if seen[key.Value] {
				c.p.errorf(key, "%s: duplicate key", join(path, key.Value))
				continue
			}
			seen[key.Value] = true
			if !yield(key, val) {
				return
			}
		}
		// Merged keys come after, so that the mapping's own keys win.
		for _, m := range merged {
			sources := []*yaml.Node{m}
			if m.Kind == yaml.SequenceNode {
				sources = m.Content
			}
			for _, src := range sources {
				src = deref(src)
				if src.Kind != yaml.MappingNode {
					c.p.errorf(src, "%s: a merge key (<<) needs a mapping, got %s", pathOr(path, "document"), describe(src))
					continue
				}
				for i := 0; i+1 < len(src.Content); i += 2 {
					key, val := deref(src.Content[i]), src.Content[i+1]
					if key.Kind != yaml.ScalarNode || seen[key.Value] {
						continue
					}
					seen[key.Value] = true
					if !yield(key, val) {
						return
					}
				}
			}
		}
	}
}

// lookup returns the value of a key in a mapping, or nil.
func lookup(n *yaml.Node, key string) *yaml.Node {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// deref follows aliases (*name) to their anchored node.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's type for messages: "a list", "the number 1.2".
func describe(n *yaml.Node) string {
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		}
		return limits.Quote(n.Value)
	}
	return "nothing"
}

func kindWord(k protoreflect.Kind) string {
	switch k {
	case protoreflect.StringKind, protoreflect.BytesKind:
		return "a string"
	case protoreflect.BoolKind:
		return "true or false"
	}
	return "a number"
}

func kindList() string {
	names := make([]string, len(resource.Kinds))
	for i, k := range resource.Kinds {
		names[i] = k.Name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func fieldList(md protoreflect.MessageDescriptor) string {
	return strings.Join(fieldNames(md), ", ")
}

func fieldNames(md protoreflect.MessageDescriptor) []string {
	fs := md.Fields()
	names := make([]string, fs.Len())
	for i := range fs.Len() {
		names[i] = fs.Get(i).JSONName()
	}
	return names
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func pathOr(path, alt string) string {
	if path == "" {
		return alt
	}
	return path
}
