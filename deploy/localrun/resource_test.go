package localrun

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestResourceFieldRef: limits.memory reads as the kubelet gives it, bytes
// divided by the divisor and rounded up; a resource the container does not
// set is an error that names it.
func TestResourceFieldRef(t *testing.T) {
	t.Parallel()
	p := &Pod{name: "keyway-proxy-0", container: corev1.Container{Resources: corev1.ResourceRequirements{
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")},
	}}}
	for _, tc := range []struct {
		divisor string
		want    string
	}{{"", "1073741824"}, {"1Mi", "1024"}, {"1000Mi", "2"}} {
		ref := &corev1.ResourceFieldSelector{Resource: "limits.memory"}
		if tc.divisor != "" {
			ref.Divisor = resource.MustParse(tc.divisor)
		}
		got, err := resourceValue(p, "KEYWAY_MEMORY_LIMIT", ref)
		if err != nil || got != tc.want {
			t.Errorf("divisor %q: %q, %v; want %q", tc.divisor, got, err, tc.want)
		}
	}
	if _, err := resourceValue(p, "X", &corev1.ResourceFieldSelector{Resource: "requests.memory"}); err == nil {
		t.Error("requests.memory, which the container does not set: no error")
	}
}
