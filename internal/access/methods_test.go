package access_test

import (
	"testing"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	_ "keyway.dev/gen/keyway/policy/v1"
	_ "keyway.dev/gen/keyway/secrets/v1"
)

// methods are the method names of a service, from its descriptor.
func methods(t *testing.T, service string) []string {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service))
	if err != nil {
		t.Fatalf("service %s: %v", service, err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	var out []string
	for i := range sd.Methods().Len() {
		out = append(out, string(sd.Methods().Get(i).Name()))
	}
	if len(out) == 0 {
		t.Fatalf("service %s has no method", service)
	}
	return out
}
