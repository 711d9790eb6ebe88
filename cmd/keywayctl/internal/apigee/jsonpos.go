package apigee

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Reading targetservers.json. encoding/json reports a syntax error as a
// byte offset and a type error as a Go struct path, and stops at the first
// one; a user who pasted the guide's excerpt needs the line and column of
// every problem in their file, in the file's own terms, with the fix. So the
// file is read here into a tree of values that remember where they were
// written, and the mistakes hand-edited JSON commonly has (trailing commas,
// comments, an ellipsis for "more of the same", a '}' too many, unquoted
// words) are reported and stepped over so that all of them come out in one
// run. Whatever this reader accepts is then checked with encoding/json too,
// so it never accepts more than JSON.

// maxDepth bounds nesting: a target server file is four levels deep.
const maxDepth = 32

// maxSyntaxErrors bounds how many syntax problems one run reports.
const maxSyntaxErrors = 20

// pos is a place in the file: the byte offset, and the 1-based line and
// column (in characters) an editor shows.
type pos struct{ off, line, col int }

type valueKind uint8

const (
	kindNull valueKind = iota
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func (k valueKind) String() string {
	return [...]string{"null", "a boolean", "a number", "a string", "a list", "an object"}[k]
}

// value is one JSON value and where it was written.
type value struct {
	kind valueKind
	at   pos // first character
	end  pos // closing bracket of a list or an object
	// raw is a scalar as written (a number's digits, true, false).
	raw string
	// str is a string's value.
	str    string
	items  []*value
	fields []*member
}

// member is one field of an object.
type member struct {
	key string
	at  pos // the key's opening quote
	val *value
}

// describe says what a value is, for "want X, got Y" messages.
func (v *value) describe() string {
	switch v.kind {
	case kindString:
		return fmt.Sprintf("the string %s", quote(v.str))
	case kindNumber, kindBool:
		return v.kind.String() + " " + limit(v.raw)
	}
	return v.kind.String()
}

// syntaxProblem is a syntax error at a position.
type syntaxProblem struct {
	at  pos
	msg string
}

// errStop unwinds the reader after a problem it cannot step over.
var errStop = errors.New("stop")

type reader struct {
	data      []byte
	off       int
	line, col int
	depth     int
	problems  []syntaxProblem
	// stoppedAt is where the reader gave up after maxSyntaxErrors.
	stoppedAt *pos
}

// parseJSON reads data into a tree of positioned values. It returns the
// syntax problems found, in file order (an empty file's at offset 0, line
// 0: the file as a whole); the tree is only meaningful when
// there are none.
func parseJSON(data []byte) (*value, []syntaxProblem) {
	r := &reader{data: data, line: 1, col: 1}
	// A byte order mark, as some Windows editors write, is not JSON but
	// is harmless.
	if bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		r.off = 3
	}
	root, err := r.top()
	if err == nil && len(r.problems) == 0 {
		// The backstop: nothing encoding/json refuses gets through.
		var v any
		if !json.Valid(data[r.bom():]) {
			jerr := json.Unmarshal(data[r.bom():], &v)
			at := r.posAt(r.bom())
			var se *json.SyntaxError
			if errors.As(jerr, &se) {
				at = r.posAt(r.bom() + int(se.Offset) - 1)
			}
			r.problems = append(r.problems, syntaxProblem{at, "invalid JSON: " + strings.TrimPrefix(fmt.Sprint(jerr), "json: ")})
		}
	}
	// A list or an object never closed is reported where it opens, after
	// what was found inside it.
	slices.SortStableFunc(r.problems, func(a, b syntaxProblem) int { return cmp.Compare(a.at.off, b.at.off) })
	if r.stoppedAt != nil {
		r.problems = append(r.problems, syntaxProblem{*r.stoppedAt, fmt.Sprintf("stopping after %d problems: fix these and run the import again", maxSyntaxErrors)})
	}
	return root, r.problems
}

func (r *reader) bom() int {
	if bytes.HasPrefix(r.data, []byte("\xef\xbb\xbf")) {
		return 3
	}
	return 0
}

// posAt computes the position of a byte offset.
func (r *reader) posAt(off int) pos {
	off = min(max(off, 0), len(r.data))
	p := pos{off: off, line: 1, col: 1}
	for _, b := range r.data[:off] {
		switch {
		case b == '\n':
			p.line++
			p.col = 1
		case b&0xc0 != 0x80:
			p.col++
		}
	}
	return p
}

func (r *reader) here() pos { return pos{r.off, r.line, r.col} }

func (r *reader) eof() bool { return r.off >= len(r.data) }

// advance consumes n bytes.
func (r *reader) advance(n int) {
	for _, b := range r.data[r.off:min(r.off+n, len(r.data))] {
		switch {
		case b == '\n':
			r.line++
			r.col = 1
		case b&0xc0 != 0x80: // not a UTF-8 continuation byte
			r.col++
		}
	}
	r.off = min(r.off+n, len(r.data))
}

// problem records a syntax problem; past maxSyntaxErrors the reader stops.
func (r *reader) problem(at pos, format string, args ...any) error {
	r.problems = append(r.problems, syntaxProblem{at, fmt.Sprintf(format, args...)})
	if len(r.problems) >= maxSyntaxErrors {
		r.stoppedAt = new(pos)
		*r.stoppedAt = r.here()
		return errStop
	}
	return nil
}

// fatal records a problem the reader cannot step over.
func (r *reader) fatal(at pos, format string, args ...any) error {
	r.problems = append(r.problems, syntaxProblem{at, fmt.Sprintf(format, args...)})
	return errStop
}

// skipSpace skips whitespace, and comments, which JSON does not have: each
// is reported.
func (r *reader) skipSpace() error {
	for !r.eof() {
		switch b := r.data[r.off]; {
		case b == ' ' || b == '\t' || b == '\r' || b == '\n':
			r.advance(1)
		case b == '#' || b == '/' && r.off+1 < len(r.data) && (r.data[r.off+1] == '/' || r.data[r.off+1] == '*'):
			at := r.here()
			var text []byte
			if bytes.HasPrefix(r.data[r.off:], []byte("/*")) {
				end := bytes.Index(r.data[r.off+2:], []byte("*/"))
				if end < 0 {
					return r.fatal(at, "a comment /* that is never closed, and JSON has no comments: delete it")
				}
				text = r.data[r.off : r.off+2+end+2]
			} else {
				end := bytes.IndexByte(r.data[r.off:], '\n')
				if end < 0 {
					end = len(r.data) - r.off
				}
				text = bytes.TrimRight(r.data[r.off:r.off+end], "\r")
				if label := fileLabel.Find(text); b == '#' && label != nil {
					// "#targetservers.json [ {…" on one line, as a
					// guide's excerpt flattened: the label is the
					// comment, the JSON after it is the file.
					text = bytes.TrimRight(label[:len(label)-1], " \t")
				}
			}
			hint := ""
			if b == '#' && at.line == 1 {
				hint = " (a guide's excerpt names its file so; the name is not part of the file)"
			}
			if err := r.problem(at, "%s is a comment, and JSON has no comments: delete it%s", quoteBytes(text), hint); err != nil {
				return err
			}
			r.advance(len(text))
		default:
			return nil
		}
	}
	return nil
}

// top reads the file's one value.
func (r *reader) top() (*value, error) {
	if err := r.skipSpace(); err != nil {
		return nil, err
	}
	if r.eof() {
		return nil, r.fatal(pos{}, `the file is empty; give Apigee's targetservers.json: [{"name": …, "host": …, "port": …, "sSLInfo": {…}}]`)
	}
	v, err := r.value()
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, r.unexpected("a list of target servers [{…}] or {\"targetServer\": [{…}]}")
	}
	if err := r.skipSpace(); err != nil {
		return v, err
	}
	if !r.eof() {
		what := "value"
		switch v.kind {
		case kindArray:
			what = "list"
		case kindObject:
			what = "object"
		}
		extra := ""
		if c := r.data[r.off]; (c == '}' || c == ']') && v.kind >= kindArray {
			extra = fmt.Sprintf(": a %q too many, or one closed too early before it", c)
		}
		return v, r.fatal(r.here(), "%s after the end of the %s that opened at %d:%d and closed at %d:%d%s; delete it, or check the brackets before it",
			quoteBytes(r.snippet()), what, v.at.line, v.at.col, v.end.line, v.end.col, extra)
	}
	return v, nil
}

// snippet is what is written at the reader's position, up to the end of
// the line or 20 characters.
func (r *reader) snippet() []byte {
	rest := r.data[r.off:]
	if i := bytes.IndexAny(rest, "\r\n"); i >= 0 {
		rest = rest[:i]
	}
	n := 0
	for i := range string(rest) {
		if n == 20 {
			return append(rest[:i:i], "…"...)
		}
		n++
	}
	return rest
}

// unexpected reports what is at the reader's position when want was.
func (r *reader) unexpected(want string) error {
	if r.eof() {
		return r.fatal(r.here(), "the file ends where %s should be", want)
	}
	return r.fatal(r.here(), "%s where %s should be", quoteBytes(r.snippet()), want)
}

// fileLabel matches a one-word '#' label followed on its line by JSON.
var fileLabel = regexp.MustCompile(`^#[^\s\[\]{}"]+[ \t]+[\[{]`)

// bareWord returns the unquoted word at the start of b (a missing pair of
// quotes, or a boolean in the wrong case), or nil.
func bareWord(b []byte) []byte {
	if len(b) == 0 || !(isLetter(b[0]) || b[0] == '_' || b[0] == '$') {
		return nil
	}
	n := 1
	for n < len(b) && (isLetter(b[n]) || b[n] >= '0' && b[n] <= '9' || strings.IndexByte("_.$-", b[n]) >= 0) {
		n++
	}
	return b[:n]
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// numberish returns what may be a number at the start of b, to be checked
// against JSON's grammar.
func numberish(b []byte) []byte {
	n := 0
	for n < len(b) && (b[n] >= '0' && b[n] <= '9' || strings.IndexByte("-+.eE", b[n]) >= 0) {
		n++
	}
	return b[:n]
}

// isJSONNumber reports whether s follows JSON's number grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// isEllipsis reports whether the reader is at "…" or "...", the way a
// guide's excerpt says "more of the same".
func (r *reader) isEllipsis() (int, bool) {
	rest := r.data[r.off:]
	switch {
	case bytes.HasPrefix(rest, []byte("…")):
		return len("…"), true
	case bytes.HasPrefix(rest, []byte("...")):
		return 3, true
	}
	return 0, false
}

// value reads one value, or returns nil (and no error) when none starts at
// the reader's position, for the caller to say what was expected.
func (r *reader) value() (*value, error) {
	at := r.here()
	if r.eof() {
		return nil, nil
	}
	switch c := r.data[r.off]; {
	case c == '{':
		return r.object()
	case c == '[':
		return r.array()
	case c == '"':
		s, err := r.str()
		if err != nil {
			return nil, err
		}
		return &value{kind: kindString, at: at, str: s}, nil
	case c == '\'':
		return r.singleQuoted()
	case c == '-' || c == '+' || c == '.' || c >= '0' && c <= '9':
		raw := string(numberish(r.data[r.off:]))
		r.advance(len(raw))
		if !isJSONNumber(raw) {
			hint := ""
			switch {
			case strings.HasPrefix(strings.TrimPrefix(raw, "-"), "0") && len(strings.TrimPrefix(raw, "-")) > 1 && !strings.HasPrefix(strings.TrimPrefix(raw, "-"), "0."):
				hint = ": JSON numbers have no leading zeros"
			case strings.HasPrefix(raw, "+"):
				hint = ": JSON numbers have no '+' sign"
			}
			if err := r.problem(at, "%s is not a JSON number%s", limit(raw), hint); err != nil {
				return nil, err
			}
		}
		return &value{kind: kindNumber, at: at, raw: raw}, nil
	}
	if word := bareWord(r.data[r.off:]); word != nil {
		w := string(word)
		switch w {
		case "true", "false":
			r.advance(len(w))
			return &value{kind: kindBool, at: at, raw: w}, nil
		case "null":
			r.advance(len(w))
			return &value{kind: kindNull, at: at, raw: w}, nil
		}
		r.advance(len(w))
		switch lw := strings.ToLower(w); {
		case lw == "true" || lw == "false":
			if err := r.problem(at, "%s: JSON's booleans are lowercase: write %s", w, lw); err != nil { // w is one of a few words
				return nil, err
			}
			return &value{kind: kindBool, at: at, raw: lw}, nil
		case lw == "null" || lw == "none" || lw == "nil" || lw == "undefined":
			if err := r.problem(at, "%s is not JSON: write null, or leave the field out", w); err != nil { // w is one of a few words
				return nil, err
			}
			return &value{kind: kindNull, at: at, raw: "null"}, nil
		}
		if err := r.problem(at, "%s is not a JSON value: strings are written in double quotes: \"%s\"", limit(w), limit(w)); err != nil {
			return nil, err
		}
		return &value{kind: kindString, at: at, str: w}, nil
	}
	return nil, nil
}

// str reads a double-quoted string and decodes it as JSON does.
func (r *reader) str() (string, error) {
	at := r.here()
	i := r.off + 1
	for ; i < len(r.data); i++ {
		switch r.data[i] {
		case '\\':
			i++
			continue
		case '"':
		case '\n':
			return "", r.fatal(at, "the string that starts here is not closed on its line: add the closing '\"' (a string cannot span lines; write \\n for a line break)")
		default:
			continue
		}
		break
	}
	if i >= len(r.data) {
		return "", r.fatal(at, "the string that starts here is never closed: add the closing '\"'")
	}
	raw := r.data[r.off : i+1]
	r.advance(len(raw))
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var se *json.SyntaxError
		detail := err.Error()
		if errors.As(err, &se) {
			detail = se.Error()
		}
		if err := r.problem(at, "the string %s is not valid JSON (%s): escape control characters and tabs (\\t, \\n), and backslashes as \\\\", quoteBytes(raw), detail); err != nil {
			return "", err
		}
		return string(raw[1 : len(raw)-1]), nil
	}
	return s, nil
}

// singleQuoted reads a string in single quotes, reported, as a string.
func (r *reader) singleQuoted() (*value, error) {
	at := r.here()
	end := bytes.IndexAny(r.data[r.off+1:], "'\n")
	if end < 0 || r.data[r.off+1+end] != '\'' {
		return nil, r.fatal(at, "a string in single quotes that is not closed on its line; JSON strings are in double quotes")
	}
	s := string(r.data[r.off+1 : r.off+1+end])
	r.advance(end + 2)
	if err := r.problem(at, "'%s' is in single quotes; JSON strings are in double quotes: \"%s\"", limit(s), limit(s)); err != nil {
		return nil, err
	}
	return &value{kind: kindString, at: at, str: s}, nil
}

// enter and leave bound nesting.
func (r *reader) enter(at pos) error {
	r.depth++
	if r.depth > maxDepth {
		return r.fatal(at, "nested more than %d levels deep; a target server file is four levels deep", maxDepth)
	}
	return nil
}

func (r *reader) leave() { r.depth-- }

// ellipsis reports "…" where an element or a field should be; lastComma is
// the comma before it, if any. It returns with the reader after it.
func (r *reader) ellipsis(n int, lastComma *pos, close byte) error {
	at := r.here()
	text := string(r.data[r.off : r.off+n])
	r.advance(n)
	if err := r.skipSpace(); err != nil {
		return err
	}
	fix := "delete it"
	switch {
	case !r.eof() && r.data[r.off] == close && lastComma != nil:
		fix = fmt.Sprintf("delete it and the ',' before it (at %d:%d)", lastComma.line, lastComma.col)
	case !r.eof() && r.data[r.off] == ',':
		fix = "delete it and the ',' after it"
		r.advance(1)
	}
	return r.problem(at, "%s stands for \"more of the same\" in a guide's excerpt, and is not JSON: %s", text, fix)
}

// array reads a list; the reader is at '['.
func (r *reader) array() (*value, error) {
	v := &value{kind: kindArray, at: r.here()}
	if err := r.enter(v.at); err != nil {
		return nil, err
	}
	defer r.leave()
	r.advance(1)
	sep := true        // after '[' or ',': a value may come
	var lastComma *pos // the ',' just read, for a trailing one
	for {
		if err := r.skipSpace(); err != nil {
			return nil, err
		}
		if r.eof() {
			return nil, r.fatal(v.at, "the list that opens here is never closed: add ']' at its end")
		}
		c := r.data[r.off]
		if c == ']' {
			if sep && lastComma != nil {
				if err := r.problem(*lastComma, "a ',' before ']' (a trailing comma), which JSON does not allow: delete it"); err != nil {
					return nil, err
				}
			}
			v.end = r.here()
			r.advance(1)
			return v, nil
		}
		if !sep {
			last := v.items[len(v.items)-1]
			switch {
			case c == ',':
				p := r.here()
				sep, lastComma = true, &p
				r.advance(1)
				continue
			case c == ':' && last.kind == kindString && len(v.items) > 1 && v.items[len(v.items)-2].kind == kindObject:
				// `{…} }, "protocol": "HTTP" }`: a field after its
				// object was closed by a '}' too many. Report it, and
				// read the rest of the object's fields into it.
				obj := v.items[len(v.items)-2]
				v.items = v.items[:len(v.items)-1]
				if err := r.problem(last.at, "%s is a field outside any object: the '}' at %d:%d closed the object that opened at %d:%d before it; delete that '}' (or move the field inside)",
					quote(last.str), obj.end.line, obj.end.col, obj.at.line, obj.at.col); err != nil {
					return nil, err
				}
				r.advance(1)
				if err := r.enter(obj.at); err != nil {
					return nil, err
				}
				err := r.fieldValue(obj, &member{key: last.str, at: last.at})
				if err == nil {
					err = r.members(obj, true)
				}
				r.leave()
				if err != nil {
					return nil, err
				}
				continue
			case r.line > r.lineOfLastItem(v) && r.startsValue():
				// A value on a new line, the ',' after the last one
				// forgotten: what the file means is clear.
				if err := r.problem(r.here(), "a ',' is missing before this value (after the one at %d:%d)", last.at.line, last.at.col); err != nil {
					return nil, err
				}
			case c == '}':
				return nil, r.fatal(r.here(), "'}' where ']' should close the list that opened at %d:%d; check the brackets before it", v.at.line, v.at.col)
			default:
				return nil, r.unexpected("',' or ']'")
			}
		} else if n, ok := r.isEllipsis(); ok {
			if err := r.ellipsis(n, lastComma, ']'); err != nil {
				return nil, err
			}
			lastComma = nil
			continue
		}
		item, err := r.value()
		if err != nil {
			return nil, err
		}
		if item == nil {
			if c == '}' {
				return nil, r.fatal(r.here(), "'}' where ']' should close the list that opened at %d:%d; check the brackets before it", v.at.line, v.at.col)
			}
			return nil, r.unexpected("a value or ']'")
		}
		v.items = append(v.items, item)
		sep, lastComma = false, nil
	}
}

// lineOfLastItem is the line the list's last item ends on.
func (r *reader) lineOfLastItem(v *value) int {
	last := v.items[len(v.items)-1]
	if last.kind >= kindArray {
		return last.end.line
	}
	return last.at.line
}

// startsValue reports whether a value may start at the reader's position.
func (r *reader) startsValue() bool {
	if r.eof() {
		return false
	}
	c := r.data[r.off]
	return c == '{' || c == '[' || c == '"' || c == '-' || c >= '0' && c <= '9' || bareWord(r.data[r.off:]) != nil
}

// object reads an object; the reader is at '{'.
func (r *reader) object() (*value, error) {
	v := &value{kind: kindObject, at: r.here()}
	if err := r.enter(v.at); err != nil {
		return nil, err
	}
	defer r.leave()
	r.advance(1)
	if err := r.members(v, false); err != nil {
		return nil, err
	}
	return v, nil
}

// members reads an object's fields up to and including its '}'; after is
// set when the reader is just after a field's value.
func (r *reader) members(v *value, after bool) error {
	var lastComma *pos // the ',' just read, for a trailing one
	for {
		if err := r.skipSpace(); err != nil {
			return err
		}
		if r.eof() {
			return r.fatal(v.at, "the object that opens here is never closed: add '}' at its end")
		}
		c := r.data[r.off]
		if c == '}' {
			if !after && lastComma != nil {
				if err := r.problem(*lastComma, "a ',' before '}' (a trailing comma), which JSON does not allow: delete it"); err != nil {
					return err
				}
			}
			v.end = r.here()
			r.advance(1)
			return nil
		}
		if after {
			switch {
			case c == ',':
				p := r.here()
				after, lastComma = false, &p
				r.advance(1)
				continue
			case c == '"' && len(v.fields) > 0 && r.line > r.lineOfLastValue(v):
				// A field on a new line, the ',' after the last one
				// forgotten.
				last := v.fields[len(v.fields)-1]
				if err := r.problem(r.here(), "a ',' is missing before this field (after the field %s at %d:%d)", quote(last.key), last.at.line, last.at.col); err != nil {
					return err
				}
			case c == ']':
				return r.fatal(r.here(), "']' where '}' should close the object that opened at %d:%d; check the brackets before it", v.at.line, v.at.col)
			default:
				return r.unexpected("',' or '}'")
			}
		} else if n, ok := r.isEllipsis(); ok {
			if err := r.ellipsis(n, lastComma, '}'); err != nil {
				return err
			}
			lastComma = nil
			continue
		}
		m := &member{at: r.here()}
		switch {
		case c == '"':
			s, err := r.str()
			if err != nil {
				return err
			}
			m.key = s
		case c == '\'':
			k, err := r.singleQuoted()
			if err != nil {
				return err
			}
			m.key = k.str
		case bareWord(r.data[r.off:]) != nil:
			w := string(bareWord(r.data[r.off:]))
			r.advance(len(w))
			if err := r.problem(m.at, "the field name %s is not in double quotes: write \"%s\"", limit(w), limit(w)); err != nil {
				return err
			}
			m.key = w
		default:
			return r.unexpected("a field name in double quotes or '}'")
		}
		if err := r.skipSpace(); err != nil {
			return err
		}
		if r.eof() || r.data[r.off] != ':' {
			if k := strings.TrimSpace(m.key); strings.HasSuffix(k, ":") || strings.HasSuffix(k, ",") {
				return r.fatal(m.at, "the field name %s ends with %q: a '\"' is missing after %s", quote(m.key), k[len(k)-1:], quote(strings.TrimSpace(k[:len(k)-1])))
			}
			if r.startsValue() {
				return r.fatal(r.here(), "a ':' is missing after the field name %s: write %s: …", quote(m.key), quote(m.key))
			}
			return r.unexpected(fmt.Sprintf("':' after the field name %s", quote(m.key)))
		}
		r.advance(1)
		if err := r.fieldValue(v, m); err != nil {
			return err
		}
		lastComma, after = nil, true
	}
}

// lineOfLastValue is the line the object's last field starts on.
func (r *reader) lineOfLastValue(v *value) int {
	if len(v.fields) == 0 {
		return v.at.line
	}
	last := v.fields[len(v.fields)-1].val
	if last.kind >= kindArray {
		return last.end.line
	}
	return last.at.line
}

// fieldValue reads the value of m after its ':' and adds m to v.
func (r *reader) fieldValue(v *value, m *member) error {
	if err := r.skipSpace(); err != nil {
		return err
	}
	val, err := r.value()
	if err != nil {
		return err
	}
	if val == nil {
		return r.unexpected(fmt.Sprintf("the value of %s", quote(m.key)))
	}
	m.val = val
	v.fields = append(v.fields, m)
	return nil
}

// quote quotes s for a message, bounded.
func quote(s string) string {
	if len(s) > 64 {
		cut := 64
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// limit bounds text from the file for a message.
func limit(s string) string {
	if utf8.RuneCountInString(s) > 40 {
		return string([]rune(s)[:40]) + "…"
	}
	return s
}

// quoteBytes shows written text in backquotes, bounded.
func quoteBytes(b []byte) string {
	return "`" + limit(string(b)) + "`"
}
