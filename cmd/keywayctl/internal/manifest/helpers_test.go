package manifest

import (
	"strconv"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

func itoa(i int) string { return strconv.Itoa(i) }

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
