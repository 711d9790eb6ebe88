package stack

import (
	"slices"
	"testing"
)

func TestChildEnvPassesOTELButTheServiceName(t *testing.T) {
	got := childEnv([]string{"PATH=/bin", "OTEL_TRACES_EXPORTER=console", "OTEL_SERVICE_NAME=mine", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=dev"})
	want := []string{"PATH=/bin", "OTEL_TRACES_EXPORTER=console", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=dev"}
	if !slices.Equal(got, want) {
		t.Fatalf("childEnv = %q, want %q", got, want)
	}
}
