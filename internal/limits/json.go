package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// StrictJSON is the handler options that make a Connect service read JSON
// as keywayctl reads manifests: an unknown field or an unknown enum value
// is refused (connect-go's own JSON codec discards unknown fields), and the
// error names the field by its path in the request ("resources[0].service.
// spec.adress") with at most a prefix of the bad value.
func StrictJSON() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(jsonCodec{name: "json"}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8"}),
	}
}

type jsonCodec struct{ name string }

func (c jsonCodec) Name() string { return c.name }

func (jsonCodec) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("limits: %T is not a proto.Message", msg)
	}
	return protojson.MarshalOptions{}.Marshal(m)
}

func (jsonCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("limits: %T is not a proto.Message", msg)
	}
	if len(data) == 0 {
		// An empty body is the empty message, as in connect-go.
		return nil
	}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(data, m); err != nil {
		return JSONError(data, err)
	}
	return nil
}

// protojsonPos is protojson's "(line L:C): reason".
var protojsonPos = regexp.MustCompile(`(?s)\(line (\d+):(\d+)\): (.*)$`)

// unknownField is protojson's reason for a member the message lacks.
var unknownField = regexp.MustCompile(`(?s)^unknown field "(.*)"$`)

// JSONError turns a protojson error about data into one that names the
// field's path in data and says what to do, quoting at most a prefix of
// any value.
func JSONError(data []byte, err error) error {
	m := protojsonPos.FindStringSubmatch(err.Error())
	if m == nil {
		return errors.New(Value(strings.TrimPrefix(err.Error(), "proto: ")))
	}
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	reason := m[3]
	path := jsonPathAt(data, offsetOf(data, line, col))
	fix := ""
	switch {
	case unknownField.MatchString(reason):
		name := unknownField.FindStringSubmatch(reason)[1]
		reason = "unknown field " + Quote(name)
		fix = "; remove it or correct its spelling (field names are the camelCase JSON names of keyway.policy.v1 / keyway.secrets.v1)"
	case strings.HasPrefix(reason, "invalid value for enum"):
		reason = Value(reason)
		fix = "; use one of the enum's names"
	case strings.HasPrefix(reason, "invalid value for"):
		reason = Value(reason)
		fix = "; give a value of the field's type and range"
	default:
		reason = Value(reason)
	}
	if path == "" {
		return fmt.Errorf("request body: %s%s", reason, fix)
	}
	return fmt.Errorf("%s: %s%s", path, reason, fix)
}

// offsetOf turns protojson's 1-based line and rune column into a byte
// offset of data.
func offsetOf(data []byte, line, col int) int {
	off := 0
	for l := 1; l < line; l++ {
		i := bytes.IndexByte(data[off:], '\n')
		if i < 0 {
			return len(data)
		}
		off += i + 1
	}
	for c := 1; c < col && off < len(data); c++ {
		_, size := utf8.DecodeRune(data[off:])
		off += size
	}
	return off
}

type jsonFrame struct {
	array     bool
	index     int
	key       string
	expectKey bool
}

// jsonPathAt is the path ("a.b[2].c") of the token of data that covers
// offset, or "" for the top level.
func jsonPathAt(data []byte, offset int) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []jsonFrame
	path := func() string {
		var b strings.Builder
		for _, f := range stack {
			switch {
			case f.array && f.index >= 0:
				fmt.Fprintf(&b, "[%d]", f.index)
			case !f.array && f.key != "":
				if b.Len() > 0 {
					b.WriteByte('.')
				}
				b.WriteString(Prefix(f.key))
			}
		}
		return b.String()
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			if err == io.EOF {
				return ""
			}
			return path()
		}
		end := int(dec.InputOffset())
		var top *jsonFrame
		if len(stack) > 0 {
			top = &stack[len(stack)-1]
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && !stack[len(stack)-1].array {
				stack[len(stack)-1].expectKey = true
			}
			continue
		}
		if top != nil && !top.array && top.expectKey {
			top.key, _ = tok.(string)
			top.expectKey = false
			if end > offset {
				return path()
			}
			continue
		}
		// A value starts.
		if top != nil && top.array {
			top.index++
		}
		if end > offset {
			return path()
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, jsonFrame{expectKey: true})
		case json.Delim('['):
			stack = append(stack, jsonFrame{array: true, index: -1})
		default:
			if top != nil && !top.array {
				top.expectKey = true
			}
		}
	}
}
