// Package fuzzseed gives the fuzz tests of Keyway's parsers the project's
// own examples as seeds, and checks the properties every parser of
// untrusted input must keep whatever it is fed: it returns within a bounded
// time, and no line of its errors is longer than [MaxErrorLine] (a value is
// quoted by a prefix, never whole: limits.Quote).
//
// The examples are read from the checkout: the fenced blocks of the
// documentation (docs/**/*.md, README.md), files such as testdata, and the
// string literals of the end-to-end tests that hold manifests. Paths are
// relative to the repository root, the folder holding go.work.
package fuzzseed

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"

	policyv1 "keyway.dev/gen/keyway/policy/v1"
)

// MaxErrorLine is the longest line an error about untrusted input may
// have. The longest legitimate messages (a field list with a hint, a PEM
// problem with the openssl command that fixes it) are under 700 bytes; a
// message over this bound quotes the input rather than a prefix of it.
const MaxErrorLine = 1024

// MaxDuration bounds the wall-clock time one input may take. It is
// generous, since the machines running `make test` are shared and a fuzz
// worker may wait seconds for a core: it catches hangs and blow-ups (the
// alias expansion it found took minutes), not slowness.
const MaxDuration = 10 * time.Second

// Root is the repository root: the nearest folder above the working
// directory (a package's folder under `go test`) holding go.work.
func Root(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("fuzzseed: no go.work above the working directory; run the fuzz tests from the checkout")
		}
		dir = parent
	}
}

// glob expands patterns relative to the root; "**/" matches any depth of
// folders (filepath.Glob has no such form).
func glob(tb testing.TB, patterns []string) []string {
	tb.Helper()
	root := Root(tb)
	var files []string
	for _, p := range patterns {
		if dir, rest, deep := strings.Cut(p, "**/"); deep {
			err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				if ok, _ := filepath.Match(rest, d.Name()); ok {
					files = append(files, path)
				}
				return nil
			})
			if err != nil {
				tb.Fatalf("fuzzseed: %s: %v", p, err)
			}
			continue
		}
		m, err := filepath.Glob(filepath.Join(root, p))
		if err != nil {
			tb.Fatalf("fuzzseed: %s: %v", p, err)
		}
		files = append(files, m...)
	}
	return files
}

// Files returns the contents of the files matching patterns ("cmd/x/testdata/*.json").
// It fails the test when none matches: a seed set that silently shrank to
// nothing would leave the fuzzer to start from scratch.
func Files(tb testing.TB, patterns ...string) [][]byte {
	tb.Helper()
	var out [][]byte
	for _, f := range glob(tb, patterns) {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		tb.Fatalf("fuzzseed: no file matches %s", strings.Join(patterns, ", "))
	}
	return out
}

// Blocks returns the fenced code blocks written ```lang in the Markdown
// files matching patterns whose text contains marker ("" for all). It fails
// the test when there is none.
func Blocks(tb testing.TB, lang, marker string, patterns ...string) []string {
	tb.Helper()
	var out []string
	for _, f := range glob(tb, patterns) {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var (
			in    bool
			block strings.Builder
		)
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			trimmed := strings.TrimSpace(line)
			switch {
			case !in && trimmed == "```"+lang:
				in = true
				block.Reset()
			case in && trimmed == "```":
				in = false
				if strings.Contains(block.String(), marker) {
					out = append(out, block.String())
				}
			case in:
				block.WriteString(line)
				block.WriteByte('\n')
			}
		}
	}
	if len(out) == 0 {
		tb.Fatalf("fuzzseed: no ```%s block holding %q in %s", lang, marker, strings.Join(patterns, ", "))
	}
	return out
}

// GoStrings returns the string literals of the Go files matching patterns
// that contain marker, such as the manifests the end-to-end tests apply
// ("apiVersion: keyway.dev"). Format verbs (%s) are left as written.
func GoStrings(tb testing.TB, marker string, patterns ...string) []string {
	tb.Helper()
	var out []string
	fset := token.NewFileSet()
	for _, f := range glob(tb, patterns) {
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			tb.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			if s, err := strconv.Unquote(lit.Value); err == nil && strings.Contains(s, marker) {
				out = append(out, s)
			}
			return true
		})
	}
	if len(out) == 0 {
		tb.Fatalf("fuzzseed: no string literal holding %q in %s", marker, strings.Join(patterns, ", "))
	}
	return out
}

// Long is a value of n bytes to plant in seeds, so that the fuzzer starts
// from inputs whose values are far longer than any message may quote.
func Long(n int) string {
	return strings.Repeat("x", n)
}

// CheckError fails the test when a line of err's message is longer than
// [MaxErrorLine]. Errors that join one problem per line may have many
// lines; each must be short.
func CheckError(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if len(line) > MaxErrorLine {
			tb.Fatalf("an error line is %d bytes long, over %d: it echoes the input instead of quoting a prefix:\n%.400s…", len(line), MaxErrorLine, line)
		}
	}
}

// Within runs f and fails the test when it has not returned after
// [MaxDuration], or when it panics: the panic and its stack are reported on
// the test's goroutine, so the fuzzer records the input and prints why.
func Within(tb testing.TB, f func()) {
	tb.Helper()
	done := make(chan any, 1)
	go func() {
		var p any
		defer func() { done <- p }()
		defer func() {
			if r := recover(); r != nil {
				p = fmt.Sprintf("panic: %v\n%s", r, debug.Stack())
			}
		}()
		f()
	}()
	t := time.NewTimer(MaxDuration)
	defer t.Stop()
	select {
	case p := <-done:
		if p != nil {
			tb.Fatal(p)
		}
	case <-t.C:
		tb.Fatalf("the input took more than %s", MaxDuration)
	}
}

// members maps a manifest's kind to its member of the Resource oneof.
var members = map[string]string{
	"Service": "service", "Route": "route", "PolicyBinding": "policyBinding", "Listener": "listener",
}

// Resources converts the documents of YAML manifests (as the docs write
// them) to resources, as keywayctl sends them. Documents that are not a
// Keyway resource as written (a template with %s in place of a value, a
// Flex Gateway Service keywayctl converts) are left out.
func Resources(tb testing.TB, manifests ...string) []*policyv1.Resource {
	tb.Helper()
	var out []*policyv1.Resource
	for _, m := range manifests {
		dec := yaml.NewDecoder(strings.NewReader(m))
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); err != nil {
				break // the end, or a document that is not YAML
			}
			kind, _ := doc["kind"].(string)
			member, ok := members[kind]
			if !ok {
				continue
			}
			if doc["apiVersion"] == "gateway.mulesoft.com/v1alpha1" && kind != "PolicyBinding" {
				continue
			}
			b, err := json.Marshal(map[string]any{member: doc})
			if err != nil {
				continue
			}
			var r policyv1.Resource
			if protojson.Unmarshal(b, &r) == nil {
				out = append(out, &r)
			}
		}
	}
	if len(out) == 0 {
		tb.Fatal("fuzzseed: no manifest converts to a resource")
	}
	return out
}
