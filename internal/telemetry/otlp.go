package telemetry

import (
	"context"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protowire"

	"keyway.dev/internal/limits"
)

// OTLPExporter sends spans over OTLP (gRPC or HTTP/protobuf) through the
// OpenTelemetry exporters' own clients, which read every
// OTEL_EXPORTER_OTLP_* variable, retry and report partial success, but
// encodes them itself. The SDK's exporter turns each span into a tree of
// protobuf structs (four or more allocations per attribute) that are then
// marshalled through protobuf's reflection tables: a sixth of a traced
// node's CPU, and most of the garbage a traced request leaves. Here each
// span is appended to one reused buffer with protowire, and the client is
// handed a ResourceSpans whose fields are that buffer (unknown fields,
// which protobuf marshals as they are).
//
// The bytes are those the SDK's exporter sends for the same spans
// (TestOTLPEncodingMatchesSDK).
type OTLPExporter struct {
	client otlptrace.Client
	mu     sync.Mutex // one export at a time: buf is reused
	buf    []byte
	groups []spanGroup
}

// spanGroup is the spans of one resource and scope, in the order ended.
type spanGroup struct {
	res   *resource.Resource
	key   attribute.Distinct
	scope instrumentation.Scope
	spans []sdktrace.ReadOnlySpan
}

// NewOTLPExporter connects to the OTLP endpoint the environment names over
// the protocol it names (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
// OTEL_EXPORTER_OTLP_PROTOCOL; http/protobuf when neither is set).
func NewOTLPExporter(ctx context.Context) (*OTLPExporter, error) {
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	proto := strings.TrimSpace(os.Getenv(name))
	if proto == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		proto = strings.TrimSpace(os.Getenv(name))
	}
	var client otlptrace.Client
	switch proto {
	case "grpc":
		client = otlptracegrpc.NewClient()
	case "", "http/protobuf":
		client = otlptracehttp.NewClient()
	default:
		return nil, &errUnknownProtocol{name: name, value: proto}
	}
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return &OTLPExporter{client: client}, nil
}

type errUnknownProtocol struct{ name, value string }

func (e *errUnknownProtocol) Error() string {
	return fmt.Sprintf("telemetry: %s=%s: use grpc or http/protobuf", e.name, limits.Quote(e.value))
}

// ExportSpans sends spans in one request. Safe for concurrent use.
func (e *OTLPExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if len(spans) == 0 {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	rss := e.encode(spans)
	err := e.client.UploadTraces(ctx, rss)
	for i := range e.groups {
		clear(e.groups[i].spans) // the spans are not kept past the export
	}
	return err
}

// encode groups spans by resource and scope and encodes each resource's
// spans as the fields of a ResourceSpans.
func (e *OTLPExporter) encode(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	groups := e.groups[:0]
	for _, s := range spans {
		if s == nil {
			continue
		}
		res, scope := s.Resource(), s.InstrumentationScope()
		key := res.Equivalent()
		i := 0
		for i < len(groups) && (groups[i].key != key || groups[i].scope != scope) {
			i++
		}
		if i == len(groups) {
			if i < cap(groups) {
				groups = groups[:i+1]
				groups[i] = spanGroup{res: res, key: key, scope: scope, spans: groups[i].spans[:0]}
			} else {
				groups = append(groups, spanGroup{res: res, key: key, scope: scope})
			}
		}
		groups[i].spans = append(groups[i].spans, s)
	}
	e.groups = groups
	b := e.buf[:0]
	var rss []*tracepb.ResourceSpans
	starts := make([]int, 0, len(groups)+1)
	done := make([]bool, len(groups))
	for i := range groups {
		if done[i] {
			continue
		}
		start := len(b)
		starts = append(starts, start)
		if groups[i].res != nil {
			var m int
			b, m = beginMessage(b, 1) // resource
			for iter := groups[i].res.Iter(); iter.Next(); {
				b = appendKeyValue(b, 1, iter.Attribute())
			}
			b = endMessage(b, m)
		}
		// Every scope of this resource, in the order first seen.
		for j := i; j < len(groups); j++ {
			if done[j] || groups[j].key != groups[i].key {
				continue
			}
			done[j] = true
			b = appendScopeSpans(b, groups[j].scope, groups[j].spans)
		}
		if groups[i].res != nil {
			b = appendString(b, 3, groups[i].res.SchemaURL())
		}
	}
	e.buf = b
	starts = append(starts, len(b))
	for k := 0; k+1 < len(starts); k++ {
		rs := &tracepb.ResourceSpans{}
		rs.ProtoReflect().SetUnknown(b[starts[k]:starts[k+1]:starts[k+1]])
		rss = append(rss, rs)
	}
	return rss
}

func appendScopeSpans(b []byte, scope instrumentation.Scope, spans []sdktrace.ReadOnlySpan) []byte {
	b, ss := beginMessage(b, 2) // scope_spans
	if scope != (instrumentation.Scope{}) {
		var m int
		b, m = beginMessage(b, 1)
		b = appendString(b, 1, scope.Name)
		b = appendString(b, 2, scope.Version)
		for iter := scope.Attributes.Iter(); iter.Next(); {
			b = appendKeyValue(b, 3, iter.Attribute())
		}
		b = endMessage(b, m)
	}
	for _, s := range spans {
		b = appendSpan(b, s)
	}
	b = appendString(b, 3, scope.SchemaURL)
	return endMessage(b, ss)
}

func appendSpan(b []byte, s sdktrace.ReadOnlySpan) []byte {
	b, m := beginMessage(b, 2) // spans
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = appendBytes(b, 1, tid[:])
	b = appendBytes(b, 2, sid[:])
	b = appendString(b, 3, sc.TraceState().String())
	parent := s.Parent()
	if psid := parent.SpanID(); psid.IsValid() {
		b = appendBytes(b, 4, psid[:])
	}
	b = appendString(b, 5, s.Name())
	if k := spanKind(s.SpanKind()); k != 0 {
		b = protowire.AppendTag(b, 6, protowire.VarintType)
		b = protowire.AppendVarint(b, k)
	}
	b = appendFixed64(b, 7, unixNano(s.StartTime().UnixNano()))
	b = appendFixed64(b, 8, unixNano(s.EndTime().UnixNano()))
	for _, a := range s.Attributes() {
		b = appendKeyValue(b, 9, a)
	}
	b = appendUint32(b, 10, clampUint32(s.DroppedAttributes()))
	for _, ev := range s.Events() {
		var e int
		b, e = beginMessage(b, 11)
		b = appendFixed64(b, 1, unixNano(ev.Time.UnixNano()))
		b = appendString(b, 2, ev.Name)
		for _, a := range ev.Attributes {
			b = appendKeyValue(b, 3, a)
		}
		b = appendUint32(b, 4, clampUint32(ev.DroppedAttributeCount))
		b = endMessage(b, e)
	}
	b = appendUint32(b, 12, clampUint32(s.DroppedEvents()))
	for _, l := range s.Links() {
		var e int
		b, e = beginMessage(b, 13)
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		b = appendBytes(b, 1, ltid[:])
		b = appendBytes(b, 2, lsid[:])
		for _, a := range l.Attributes {
			b = appendKeyValue(b, 4, a)
		}
		b = appendUint32(b, 5, clampUint32(l.DroppedAttributeCount))
		b = appendFixed32(b, 6, spanFlags(l.SpanContext.TraceFlags(), l.SpanContext))
		b = endMessage(b, e)
	}
	b = appendUint32(b, 14, clampUint32(s.DroppedLinks()))
	// The SDK's exporter always sends a status, empty or not.
	var st int
	b, st = beginMessage(b, 15)
	status := s.Status()
	b = appendString(b, 2, status.Description)
	switch status.Code {
	case codes.Ok:
		b = appendUint32(b, 3, uint32(tracepb.Status_STATUS_CODE_OK))
	case codes.Error:
		b = appendUint32(b, 3, uint32(tracepb.Status_STATUS_CODE_ERROR))
	}
	b = endMessage(b, st)
	b = appendFixed32(b, 16, spanFlags(sc.TraceFlags(), parent))
	return endMessage(b, m)
}

// appendKeyValue appends kv as a KeyValue in field num.
func appendKeyValue(b []byte, num protowire.Number, kv attribute.KeyValue) []byte {
	b, m := beginMessage(b, num)
	b = appendString(b, 1, string(kv.Key))
	b = appendAnyValue(b, 2, kv.Value)
	return endMessage(b, m)
}

// appendAnyValue appends v as an AnyValue in field num, as the SDK's
// exporter converts it.
func appendAnyValue(b []byte, num protowire.Number, v attribute.Value) []byte {
	b, m := beginMessage(b, num)
	switch v.Type() {
	case attribute.BOOL:
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(v.AsBool()))
	case attribute.INT64:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(v.AsInt64()))
	case attribute.FLOAT64:
		b = protowire.AppendTag(b, 4, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(v.AsFloat64()))
	case attribute.STRING:
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, v.AsString())
	case attribute.BYTESLICE:
		b = protowire.AppendTag(b, 7, protowire.BytesType)
		b = protowire.AppendBytes(b, v.AsByteSlice())
	case attribute.BOOLSLICE:
		b = appendArray(b, v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		b = appendArray(b, v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		b = appendArray(b, v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		b = appendArray(b, v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		b = appendArray(b, v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		var l int
		b, l = beginMessage(b, 6)
		for _, kv := range v.AsMap() {
			b = appendKeyValue(b, 1, kv)
		}
		b = endMessage(b, l)
	case attribute.EMPTY:
		// An AnyValue with no value.
	default:
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, "INVALID")
	}
	return endMessage(b, m)
}

func appendArray[T any](b []byte, vs []T, value func(T) attribute.Value) []byte {
	b, m := beginMessage(b, 5)
	for _, v := range vs {
		b = appendAnyValue(b, 1, value(v))
	}
	return endMessage(b, m)
}

// beginMessage appends field num's tag and one byte for its length, and
// returns where the message starts; endMessage writes the length.
func beginMessage(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

// endMessage writes the length of the message that started at start,
// moving it when the length takes more than one byte.
func endMessage(b []byte, start int) []byte {
	n := len(b) - start
	if n < 0x80 {
		b[start-1] = byte(n)
		return b
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	for range extra {
		b = append(b, 0)
	}
	copy(b[start+extra:], b[start:start+n])
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}

// The appenders leave out zero values, as proto3 marshalling does.

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendUint32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendFixed32(b []byte, num protowire.Number, v uint32) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, v)
}

func appendFixed64(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, v)
}

func unixNano(n int64) uint64 { return uint64(max(0, n)) }

func clampUint32(v int) uint32 {
	if v < 0 {
		return 0
	}
	return uint32(min(int64(v), math.MaxUint32))
}

func spanKind(k trace.SpanKind) uint64 {
	switch k {
	case trace.SpanKindInternal:
		return uint64(tracepb.Span_SPAN_KIND_INTERNAL)
	case trace.SpanKindServer:
		return uint64(tracepb.Span_SPAN_KIND_SERVER)
	case trace.SpanKindClient:
		return uint64(tracepb.Span_SPAN_KIND_CLIENT)
	case trace.SpanKindProducer:
		return uint64(tracepb.Span_SPAN_KIND_PRODUCER)
	case trace.SpanKindConsumer:
		return uint64(tracepb.Span_SPAN_KIND_CONSUMER)
	}
	return 0
}

// spanFlags are the W3C flags and whether the parent is remote, as the
// SDK's exporter sets them.
func spanFlags(tf trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(tf) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if parent.IsRemote() {
		f |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	return f
}

// Shutdown stops the client.
func (e *OTLPExporter) Shutdown(ctx context.Context) error { return e.client.Stop(ctx) }
