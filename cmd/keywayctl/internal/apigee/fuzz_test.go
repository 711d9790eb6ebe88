package apigee_test

import (
	"testing"

	"keyway.dev/common/fuzzseed"
	"keyway.dev/keywayctl/internal/apigee"
	"keyway.dev/keywayctl/internal/manifest"
)

// FuzzConvert feeds the Apigee importer arbitrary JSON, starting from the
// testdata exports. Properties: bounded time; no error line quotes more
// than a prefix of a value; what converts is a manifest keywayctl reads
// back without a problem, with the Services and bindings it counted.
func FuzzConvert(f *testing.F) {
	for _, b := range fuzzseed.Files(f, "cmd/keywayctl/internal/apigee/testdata/*.json") {
		f.Add(b)
	}
	long := fuzzseed.Long(4096)
	f.Add([]byte(`[{"name": "` + long + `", "host": "` + long + `", "port": "` + long + `", "protocol": "` + long + `", "isEnabled": "` + long + `",
		"sSLInfo": {"enabled": "true", "clientAuthEnabled": "` + long + `", "trustStore": "ref://` + long + `", "protocols": ["` + long + `"], "commonName": {"value": "` + long + `", "wildcardMatch": true}}}]`))
	f.Add([]byte(`[{"name": "a", "host": "h", "port": 1, "sSLInfo": {"enabled": true, "ignoreValidationErrors": "` + long + `"}}, {"name": "A", "host": "h", "port": 2}]`))

	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			res *apigee.Result
			err error
		)
		fuzzseed.Within(t, func() { res, err = apigee.Convert("targetservers.json", data) })
		fuzzseed.CheckError(t, err)
		if err != nil {
			return
		}
		docs, err := manifest.Parse("converted.yaml", res.YAML)
		if err != nil {
			t.Fatalf("the converted manifest does not read back: %v\n%s", err, res.YAML)
		}
		services, bindings := 0, 0
		for _, d := range docs {
			switch {
			case d.Resource.GetService() != nil:
				services++
			case d.Resource.GetPolicyBinding() != nil:
				bindings++
			default:
				t.Fatalf("the converted manifest holds a %T", d.Resource.GetKind())
			}
		}
		if services != res.Services || bindings != res.Bindings {
			t.Fatalf("the manifest holds %d Services and %d bindings; the result counts %d and %d", services, bindings, res.Services, res.Bindings)
		}
	})
}
