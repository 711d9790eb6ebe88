package manifest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// Stdin is the file name that reads standard input, as in "-f -".
const Stdin = "-"

// stdinName is how positions name standard input.
const stdinName = "<stdin>"

// Position is where something was written. Line and Column are 1-based; a
// zero Line means the whole file.
type Position struct {
	File   string
	Line   int
	Column int
}

// String formats the position as "file:line:col", the form editors jump to.
func (p Position) String() string {
	f := shownFile(p.File)
	switch {
	case p.Line == 0:
		return f
	case p.Column == 0:
		return f + ":" + strconv.Itoa(p.Line)
	}
	return f + ":" + strconv.Itoa(p.Line) + ":" + strconv.Itoa(p.Column)
}

// maxShownFile bounds how much of a file name an error prints: the end of
// a path, where the file's own name is, after an ellipsis.
const maxShownFile = 200

// shownFile is the file name as messages print it: valid UTF-8, and at
// most maxShownFile bytes from its end.
func shownFile(f string) string {
	f = strings.ToValidUTF8(f, "\uFFFD")
	if len(f) <= maxShownFile {
		return f
	}
	tail := f[len(f)-maxShownFile:]
	for len(tail) > 0 && !utf8.RuneStart(tail[0]) {
		tail = tail[1:]
	}
	return "…" + tail
}

// Error is a problem in a manifest, at a position.
type Error struct {
	Pos Position
	Msg string
}

func (e *Error) Error() string { return e.Pos.String() + ": " + e.Msg }

// Note tells the user about a conversion the reader made, such as a Flex
// Gateway Service whose https:// address became host:port.
type Note struct {
	Pos Position
	Msg string
}

func (n Note) String() string { return n.Pos.String() + ": " + n.Msg }

// Document is one resource read from a manifest.
type Document struct {
	// Resource is the decoded resource, ready for an ApplyRequest.
	Resource *policyv1.Resource
	// Pos is where the document's first field was written.
	Pos Position
	// Notes are the conversions made while reading the document.
	Notes []Note
	// instance is set on the first resource made from a Flex ApiInstance;
	// flex on a resource that names one. The cross-document pass reads
	// them.
	instance *flexInstance
	flex     *flexTarget
	// fields maps a JSON field path inside the resource's member
	// ("metadata.name", "spec.config.ciphers[1]") to where it was written.
	fields map[string]Position
	// origins, set by Relocate, replaces fields for a document converted
	// from another format.
	origins map[string]Origin
}

// Origin is where a field of a converted document came from: its position
// in the file the user wrote and its name there, such as
// `targetServer[0] "orders" sSLInfo.keyAlias` for the alias of a binding
// that keywayctl import made from Apigee's targetservers.json.
type Origin struct {
	Pos  Position
	Name string
}

// Relocate makes a converted document speak of the file it was converted
// from: origins maps a field path of the resource (as [Document.Locate]
// takes it; "" for the document) to where its source was written and what
// it is called there. A path without an origin falls back to its nearest
// parent that has one. Problems the policy service reports about the
// resource are then shown at the user's file, line and column, under the
// user's names, never at the converted YAML.
func (d *Document) Relocate(origins map[string]Origin) {
	d.origins = origins
	if o, ok := origins[""]; ok {
		d.Pos = o.Pos
	}
}

// Locate returns where the field path, relative to the resource's member,
// was written. A path that was not written itself (a default the server
// filled in, a key inside a value) falls back to its nearest written parent,
// and finally to the document.
func (d *Document) Locate(path string) Position {
	if d.origins != nil {
		return d.origin(path).Pos
	}
	for {
		if pos, ok := d.fields[path]; ok {
			return pos
		}
		if path == "" {
			return d.Pos
		}
		path = parent(path)
	}
}

// Name is what the user calls the field at path: the path itself, or for
// a relocated document the name of its origin ("" for the document as a
// whole, unless relocated).
func (d *Document) Name(path string) string {
	if d.origins != nil {
		return d.origin(path).Name
	}
	return path
}

// origin is the origin of path or of its nearest parent that has one.
func (d *Document) origin(path string) Origin {
	for {
		if o, ok := d.origins[path]; ok {
			return o
		}
		if path == "" {
			return Origin{Pos: d.Pos}
		}
		path = parent(path)
	}
}

// parent drops the last element of a field path: "a.b[1]" → "a.b" → "a" → "".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// Manifest is the documents of every file read, in order: document i is
// resource i of the ApplyRequest built from it.
type Manifest []*Document

// Resources returns the resources in order.
func (m Manifest) Resources() []*policyv1.Resource {
	rs := make([]*policyv1.Resource, len(m))
	for i, d := range m {
		rs[i] = d.Resource
	}
	return rs
}

// Notes returns the notes of all documents.
func (m Manifest) Notes() []Note {
	var ns []Note
	for _, d := range m {
		ns = append(ns, d.Notes...)
	}
	return ns
}

// Locate maps a field path of the ApplyRequest built from m, such as
// "resources[2].policyBinding.spec.config.ciphers[1]", to the document, to
// where the field was written, and to the path relative to the resource
// ("spec.config.ciphers[1]"; empty for the resource as a whole), or, for a
// relocated document, the name of the field in the file it was converted
// from (see [Document.Relocate]). doc is nil when the path does not name one
// of m's resources.
func (m Manifest) Locate(field string) (doc *Document, pos Position, rel string) {
	rest, found := strings.CutPrefix(field, "resources[")
	if !found {
		return nil, Position{}, ""
	}
	idx, rest, found := strings.Cut(rest, "]")
	if !found {
		return nil, Position{}, ""
	}
	i, err := strconv.Atoi(idx)
	if err != nil || i < 0 || i >= len(m) {
		return nil, Position{}, ""
	}
	// Drop the oneof member: ".policyBinding.spec.x" → "spec.x".
	rest = strings.TrimPrefix(rest, ".")
	if j := strings.IndexAny(rest, ".["); j >= 0 {
		rest = strings.TrimPrefix(rest[j:], ".")
	} else {
		rest = ""
	}
	return m[i], m[i].Locate(rest), m[i].Name(rest)
}

// MaxBytes bounds one manifest file, or standard input, and MaxTotalBytes
// everything one Read takes: a manifest is parsed whole before anything is
// sent, and what the policy API accepts in one request is 8 MiB.
const (
	MaxBytes      = 32 << 20
	MaxTotalBytes = 128 << 20
)

// bounds are what one Read may take: per input, and in all.
type bounds struct{ each, total int64 }

// readBounded reads r, up to what b leaves after read bytes; more is an
// error that names the input and says what to do.
func (b bounds) readBounded(name string, r io.Reader, read int64) ([]byte, error) {
	limit := min(b.each, b.total-read)
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", shownFile(name), err)
	}
	switch {
	case int64(len(data)) <= limit:
	case limit < b.each: // the inputs before it used the rest
		return nil, fmt.Errorf("%s: the manifests given pass %s together; apply them in parts, one after another", shownFile(name), size(b.total))
	default:
		return nil, fmt.Errorf("%s: over %s; a manifest is read whole and the policy API takes 8 MiB per request: split it and apply the parts one after another", shownFile(name), size(b.each))
	}
	return data, nil
}

// size is n bytes in MiB when it is a whole number of them.
func size(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return strconv.FormatInt(n>>20, 10) + " MiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// readFile reads file f as readBounded reads: a device or a pipe given as
// a file has no size to check first.
func (b bounds) readFile(f string, read int64) ([]byte, error) {
	file, err := os.Open(f)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return b.readBounded(f, file, read)
}

// Read reads the manifests named by paths: files, directories (every
// *.yaml, *.yml and *.json file in them, not recursing, in name order) and
// [Stdin] for stdin, each at most [MaxBytes] and all at most
// [MaxTotalBytes]. Problems in documents are returned all at once, joined,
// each an [*Error] with its position.
func Read(paths []string, stdin io.Reader) (Manifest, error) {
	return bounds{MaxBytes, MaxTotalBytes}.read(paths, stdin)
}

func (b bounds) read(paths []string, stdin io.Reader) (Manifest, error) {
	var (
		m         Manifest
		errs      []error
		stdinRead bool
		read      int64 // bytes read so far
	)
	for _, p := range paths {
		if p == Stdin {
			if stdinRead {
				errs = append(errs, errors.New(`"-f -" given twice: standard input can be read once`))
				continue
			}
			stdinRead = true
			data, err := b.readBounded(stdinName, stdin, read)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			read += int64(len(data))
			docs, perrs := parse(stdinName, data)
			m = append(m, docs...)
			errs = append(errs, perrs...)
			continue
		}
		files, err := expand(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, err := b.readFile(f, read)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			read += int64(len(data))
			docs, perrs := parse(f, data)
			m = append(m, docs...)
			errs = append(errs, perrs...)
		}
	}
	if len(errs) == 0 {
		// Flex resources refer to each other across files, as in Flex
		// Gateway's configuration directory.
		errs = linkFlex(m)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("no resources in %s", strings.Join(paths, ", "))
	}
	return m, nil
}

// manifestExts are the extensions a directory's manifests have.
var manifestExts = []string{".yaml", ".yml", ".json"}

// expand returns the file itself, or the manifests of a directory.
func expand(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(manifestExts, strings.ToLower(filepath.Ext(e.Name()))) {
			files = append(files, filepath.Join(path, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no *.yaml, *.yml or *.json files in directory %s", path)
	}
	return files, nil // os.ReadDir sorts by name
}
