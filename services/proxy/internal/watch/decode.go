package watch

import (
	"fmt"

	"keyway.dev/internal/configkv"
	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
)

// decodeValue is the decoding of a stored value, in the steps a refusal
// names.
func decodeValue(key string, value []byte, rev uint64, decode Decoder) (model.Object, string, error) {
	ref, err := configkv.ParseKey(key)
	if err != nil {
		return model.Object{}, "ignoring a key that is not a resource", err
	}
	res, err := configkv.Decode(value, rev)
	if err != nil {
		return model.Object{}, "ignoring an unreadable value; keeping the last good one", err
	}
	obj, err := decode(res)
	if err != nil {
		return model.Object{}, "ignoring an invalid resource; keeping the last good one", err
	}
	if got := obj.Ref(); got != ref {
		return model.Object{}, "ignoring a resource stored under another resource's key", fmt.Errorf("config: key %s holds %s", limits.Quote(key), got)
	}
	return obj, "", nil
}
