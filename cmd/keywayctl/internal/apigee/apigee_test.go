package apigee_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"keyway.dev/internal/fuzzseed"
	"keyway.dev/keywayctl/internal/apigee"
	"keyway.dev/keywayctl/internal/manifest"
)

var update = flag.Bool("update", false, "rewrite the golden files from the converter's output")

// golden is what a conversion gives: the YAML, then the notes as comments.
func golden(r *apigee.Result) string {
	var b strings.Builder
	b.Write(r.YAML)
	b.WriteString("# notes:\n")
	for _, n := range r.Notes {
		b.WriteString("# " + n + "\n")
	}
	return b.String()
}

func TestConvertGolden(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"targetservers", "wrapped", "guide-fixed"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := filepath.Join("testdata", name+".json")
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			r, err := apigee.Convert(name+".json", data)
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			got := golden(r)
			want := filepath.Join("testdata", name+".golden.yaml")
			if *update {
				if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			w, err := os.ReadFile(want)
			if err != nil {
				t.Fatalf("%v (run go test -update to write it)", err)
			}
			if got != string(w) {
				t.Errorf("output differs from %s (run go test -update if the change is intended):\n%s", want, got)
			}
		})
	}
}

// TestConvertErrors: each bad file is refused with every problem at its
// line and column in the file, in the file's own names, with the fix.
func TestConvertErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"after end", `[{"name": "a", "host": "h", "port": 1}] ]`, []string{
			"ts.json:1:41: `]` after the end of the list that opened at 1:1 and closed at 1:39: a ']' too many, or one closed too early before it; delete it, or check the brackets before it",
		}},
		{"bad escape", `[{"name": "a\q", "host": "h", "port": 1}]`, []string{
			"ts.json:1:11: the string `\"a\\q\"` is not valid JSON (invalid character 'q' in string escape code): escape control characters and tabs (\\t, \\n), and backslashes as \\\\",
		}},
		{"brace for bracket", `[{"name": "a", "host": "h", "port": 1}}`, []string{
			`ts.json:1:39: '}' where ']' should close the list that opened at 1:1; check the brackets before it`,
		}},
		{"capital true", `[{"name": "a", "host": "h", "port": 1, "isEnabled": True}]`, []string{
			`ts.json:1:53: True: JSON's booleans are lowercase: write true`,
		}},
		{"clientauth", `[{"name": "a", "host": "h", "port": 1, "sSLInfo": {"enabled": true, "clientAuthEnabled": "true", "keyAlias": "", "trustStore": "t"}}]`, []string{
			`ts.json:1:90: targetServer[0] "a" sSLInfo.clientAuthEnabled: true, but keyStore is missing: give keyStore and keyAlias, the keystore and the alias of the key pair the gateway presents (stored with keywayctl secrets put --keystore KEYSTORE --alias ALIAS --cert CERT.pem --key KEY.pem)`,
			`ts.json:1:110: targetServer[0] "a" sSLInfo.keyAlias: empty; give the name of the alias of the key pair the gateway presents`,
		}},
		{"collide", `[{"name": "Orders", "host": "h", "port": 1}, {"name": "orders", "host": "h", "port": 2}]`, []string{
			`ts.json:1:55: targetServer[1] "orders" name: becomes the Keyway name "orders", as target server "Orders" does; rename one of them`,
		}},
		{"comment", `[
  {
    "name": "a", // the primary
    "host": "h", "port": 443
  }
]`, []string{
			"ts.json:3:18: `// the primary` is a comment, and JSON has no comments: delete it",
		}},
		{"deep", `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`, []string{
			`ts.json:1:33: nested more than 32 levels deep; a target server file is four levels deep`,
		}},
		{"dotted", `[{"name": "a", "host": "h", "port": 1, "sSLInfo": {"enabled": true, "clientAuthEnabled": true, "keyStore": "mtls.keystore", "keyAlias": "gw", "trustStore": "ref://ca.bundle"}}]`, []string{
			`ts.json:1:108: targetServer[0] "a" sSLInfo.keyStore: "mtls.keystore" has the character '.'; Keyway's keystore names are letters, digits, hyphens and underscores: store it under such a name and write that here`,
			`ts.json:1:157: targetServer[0] "a" sSLInfo.trustStore: "ca.bundle" has the character '.'; Keyway's truststore names are letters, digits, hyphens and underscores: store it under such a name and write that here`,
		}},
		{"duplicate", `[{"name": "a", "host": "h", "host": "i", "port": 1}]`, []string{
			`ts.json:1:29: targetServer[0] "a" host: given twice (first at 1:16); keep one`,
		}},
		{"ellipsis obj", `[{"name": "a", "host": "h", "port": 1, ...}]`, []string{
			`ts.json:1:40: ... stands for "more of the same" in a guide's excerpt, and is not JSON: delete it and the ',' before it (at 1:38)`,
		}},
		{"empty", `  
`, []string{
			`ts.json: the file is empty; give Apigee's targetservers.json: [{"name": …, "host": …, "port": …, "sSLInfo": {…}}]`,
		}},
		{"leading zero", `[{"name": "a", "host": "h", "port": 08080}]`, []string{
			`ts.json:1:37: 08080 is not a JSON number: JSON numbers have no leading zeros`,
		}},
		{"missing", `[{"description": "nothing else"}]`, []string{
			`ts.json:1:2: targetServer[0] name: missing; every target server needs one, e.g. "name": "orders"`,
			`ts.json:1:2: targetServer[0] host: missing; give the upstream's host name or IP address, e.g. "host": "orders.internal"`,
			`ts.json:1:2: targetServer[0] port: missing; give the upstream's port, e.g. "port": 443`,
		}},
		{"missing colon", `[{"name" "a"}]`, []string{
			`ts.json:1:10: a ':' is missing after the field name "name": write "name": …`,
		}},
		{"missing comma", `[
  {
    "name": "a"
    "host": "h",
    "port": 1
  }
  {"name": "b", "host": "h", "port": 2}
]`, []string{
			`ts.json:4:5: a ',' is missing before this field (after the field "name" at 3:5)`,
			`ts.json:7:3: a ',' is missing before this value (after the one at 2:3)`,
		}},
		{"missing quote key", `[
  {
    "name: "a",
    "host": "h"
  }
]`, []string{
			`ts.json:3:5: the field name "name: " ends with ":": a '"' is missing after "name"`,
		}},
		{"names list", `["orders", "billing"]`, []string{
			`ts.json:1:2: targetServer[0]: want a target server {"name": …, "host": …, "port": …}, got the string "orders" (a list of names, as Apigee's list call answers, holds no host or TLS settings: give the target servers themselves, e.g. from GET …/targetservers/NAME)`,
			`ts.json:1:12: targetServer[1]: want a target server {"name": …, "host": …, "port": …}, got the string "billing" (a list of names, as Apigee's list call answers, holds no host or TLS settings: give the target servers themselves, e.g. from GET …/targetservers/NAME)`,
		}},
		{"no list", `{"servers": []}`, []string{
			`ts.json:1:1: the object has no "targetServer" list; give a list of target servers [{…}], or {"targetServer": [{…}]}`,
			`ts.json:1:2: unknown field "servers"; the file's object holds only "targetServer", the list of target servers`,
		}},
		{"none enabled", `[{"name": "a", "host": "h", "port": 1, "isEnabled": false}]`, []string{
			`ts.json:1:1: no enabled target server to convert: every one has "isEnabled": false, or the list is empty`,
		}},
		{"single quotes", `[{'name': 'a', "host": "h", "port": 1}]`, []string{
			`ts.json:1:3: 'name' is in single quotes; JSON strings are in double quotes: "name"`,
			`ts.json:1:11: 'a' is in single quotes; JSON strings are in double quotes: "a"`,
		}},
		{"top string", `"orders"`, []string{
			`ts.json:1:1: want a list of target servers [{"name": …, "host": …, "port": …}], got the string "orders"`,
		}},
		{"trailing list", `[{"name": "a", "host": "h", "port": 1},]`, []string{
			`ts.json:1:39: a ',' before ']' (a trailing comma), which JSON does not allow: delete it`,
		}},
		{"trailing obj", `[{"name": "a", "host": "h", "port": 1,}]`, []string{
			`ts.json:1:38: a ',' before '}' (a trailing comma), which JSON does not allow: delete it`,
		}},
		{"unclosed list", `[{"name": "a", "host": "h", "port": 1}`, []string{
			`ts.json:1:1: the list that opens here is never closed: add ']' at its end`,
		}},
		{"unclosed string", `[
  {
    "name": "a,
    "host": "h"
  }
]`, []string{
			`ts.json:3:13: the string that starts here is not closed on its line: add the closing '"' (a string cannot span lines; write \n for a line break)`,
		}},
		{"unknown field", `[{"name": "a", "host": "h", "port": 1, "sSLInfo": {"enabled": true, "trustStore": "t", "keystor": "k", "foo": 1}}]`, []string{
			`ts.json:1:88: targetServer[0] "a" sSLInfo: unknown field "keystor"; did you mean "keyStore"?`,
			`ts.json:1:104: targetServer[0] "a" sSLInfo: unknown field "foo"; sSLInfo has enabled, clientAuthEnabled, keyStore, keyAlias, trustStore, ignoreValidationErrors, protocols, ciphers, commonName and enforce`,
		}},
		{"unquoted", `[{"name": "a", "host": foo, "port": 1}]`, []string{
			`ts.json:1:24: foo is not a JSON value: strings are written in double quotes: "foo"`,
		}},
		{"wrong types", `[
  {
    "name": 5,
    "host": "h",
    "port": true,
    "sSLInfo": "yes"
  },
  {
    "name": "b",
    "host": "h:8443",
    "port": 70000,
    "protocol": "SOAP",
    "isEnabled": "yes please",
    "sSLInfo": {"enabled": true, "trustStore": "", "protocols": ["TLSv1", "SSLv3"], "commonName": 7}
  }
]`, []string{
			`ts.json:3:13: targetServer[0] name: want a string, got a number 5`,
			`ts.json:5:13: targetServer[0] port: want a port number (1-65535), got a boolean true`,
			`ts.json:6:16: targetServer[0] sSLInfo: want an object {"enabled": true, "trustStore": …}, got the string "yes"`,
			`ts.json:10:13: targetServer[1] "b" host: "h:8443" holds a port; give the host alone and the port in "port"`,
			`ts.json:11:13: targetServer[1] "b" port: "70000" is not a port number (1-65535)`,
			`ts.json:12:17: targetServer[1] "b" protocol: "SOAP" has no Keyway equivalent; Keyway Services speak http1, h2 or grpc: write HTTP, HTTP2, GRPC_TARGET or GRPC`,
			`ts.json:13:18: targetServer[1] "b" isEnabled: "yes please" is not true or false`,
			`ts.json:14:48: targetServer[1] "b" sSLInfo.trustStore: empty; give the name of the truststore that holds the CAs of the upstream's certificate`,
			`ts.json:14:66: targetServer[1] "b" sSLInfo.protocols[0]: "TLSv1" (TLS 1.0) is not supported by Keyway; remove it (1.1, 1.2 and 1.3 are)`,
			`ts.json:14:75: targetServer[1] "b" sSLInfo.protocols[1]: "SSLv3" is not a TLS version; write "TLSv1.2" or "1.2" (1.1, 1.2 and 1.3 are supported)`,
			`ts.json:14:99: targetServer[1] "b" sSLInfo.commonName: want a string or {"value": …, "wildcardMatch": …}, got a number 7`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			checkErrors(t, "ts.json", []byte(tc.in), tc.want)
		})
	}
}

// checkErrors converts in and wants exactly the errors want, one a line,
// each a *manifest.Error with its position.
func checkErrors(t *testing.T, file string, in []byte, want []string) {
	t.Helper()
	r, err := apigee.Convert(file, in)
	if err == nil {
		t.Fatalf("converted:\n%s\nwant the errors:\n%s", r.YAML, strings.Join(want, "\n"))
	}
	got := strings.Split(err.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var me *manifest.Error
		if !errors.As(e, &me) || me.Pos.File != file {
			t.Errorf("%q is not a *manifest.Error in %s", e, file)
		}
	}
}

// TestGuideExcerpt: the guide's targetservers.json as written, as the seed
// holds it (one line, after the label "#targetservers.json") and as the
// guide's page shows it (one field a line): every problem in one run, at
// its place, with what to delete. Then the same file with those fixes.
func TestGuideExcerpt(t *testing.T) {
	t.Parallel()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	checkErrors(t, "targetservers.json", read("guide.json"), []string{
		"targetservers.json:1:1: `#targetservers.json` is a comment, and JSON has no comments: delete it (a guide's excerpt names its file so; the name is not part of the file)",
		`targetservers.json:1:335: a ',' before '}' (a trailing comma), which JSON does not allow: delete it`,
		`targetservers.json:1:342: "protocol" is a field outside any object: the '}' at 1:339 closed the object that opened at 1:23 before it; delete that '}' (or move the field inside)`,
		`targetservers.json:1:364: … stands for "more of the same" in a guide's excerpt, and is not JSON: delete it and the ',' before it (at 1:362)`,
	})
	checkErrors(t, "targetservers.json", read("guide-multiline.json"), []string{
		"targetservers.json:1:1: `#targetservers.json` is a comment, and JSON has no comments: delete it (a guide's excerpt names its file so; the name is not part of the file)",
		`targetservers.json:18:8: a ',' before '}' (a trailing comma), which JSON does not allow: delete it`,
		`targetservers.json:21:3: "protocol" is a field outside any object: the '}' at 20:3 closed the object that opened at 3:3 before it; delete that '}' (or move the field inside)`,
		`targetservers.json:23:3: … stands for "more of the same" in a guide's excerpt, and is not JSON: delete it and the ',' before it (at 22:4)`,
	})

	// The four deletions the errors name, and nothing else.
	fixed := string(read("guide.json"))
	for _, cut := range []string{"#targetservers.json ", `"1.2" ], }`, ", … ]"} {
		if !strings.Contains(fixed, cut) {
			t.Fatalf("the excerpt has no %q", cut)
		}
	}
	fixed = strings.Replace(fixed, "#targetservers.json ", "", 1)
	fixed = strings.Replace(fixed, `"1.2" ], } }, "protocol"`, `"1.2" ] }, "protocol"`, 1)
	fixed = strings.Replace(fixed, ", … ]", " ]", 1)
	r, err := apigee.Convert("targetservers.json", []byte(fixed))
	if err != nil {
		t.Fatalf("the excerpt with the fixes: %v", err)
	}
	for _, want := range []string{"address: foo:8080", "truststore: mtls_truststore", "keystore: mtls_keystore", "alias: mtls_alias", `minversion: "1.2"`, "legacyCommonName: true"} {
		if !bytes.Contains(r.YAML, []byte(want)) {
			t.Errorf("the converted excerpt lacks %q:\n%s", want, r.YAML)
		}
	}
}

// TestManifestSpeaksOfTheFile: what the policy service reports about a
// converted resource is located in targetservers.json, under its names.
func TestManifestSpeaksOfTheFile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join("testdata", "guide-fixed.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := apigee.Convert("targetservers.json", data)
	if err != nil {
		t.Fatal(err)
	}
	m, err := r.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ field, pos, name string }{
		{"resources[1].policyBinding.spec.config.certificate.alias", "targetservers.json:12:19", `targetServer[0] "mymtlstarget" sSLInfo.keyAlias`},
		{"resources[1].policyBinding.spec.config.certificate.keystore", "targetservers.json:11:19", `targetServer[0] "mymtlstarget" sSLInfo.keyStore`},
		{"resources[1].policyBinding.spec.config.certificate", "targetservers.json:12:19", `targetServer[0] "mymtlstarget" sSLInfo.keyAlias`},
		{"resources[1].policyBinding.spec.config.trustedCA.truststore", "targetservers.json:13:21", `targetServer[0] "mymtlstarget" sSLInfo.trustStore`},
		{"resources[1].policyBinding.spec.config.minversion", "targetservers.json:16:9", `targetServer[0] "mymtlstarget" sSLInfo.protocols[0]`},
		{"resources[1].policyBinding.spec.config", "targetservers.json:8:16", `targetServer[0] "mymtlstarget" sSLInfo`},
		// A field that was not written falls back to its parent's origin.
		{"resources[1].policyBinding.spec.config.alpn[0]", "targetservers.json:8:16", `targetServer[0] "mymtlstarget" sSLInfo`},
		{"resources[1].policyBinding", "targetservers.json:8:16", `targetServer[0] "mymtlstarget" sSLInfo`},
		{"resources[0].service.spec.address", "targetservers.json:5:13", `targetServer[0] "mymtlstarget" host`},
		{"resources[0].service.metadata.name", "targetservers.json:3:13", `targetServer[0] "mymtlstarget" name`},
		{"resources[0].service", "targetservers.json:2:3", `targetServer[0] "mymtlstarget"`},
	} {
		doc, pos, name := m.Locate(tc.field)
		if doc == nil || pos.String() != tc.pos || name != tc.name {
			t.Errorf("%s: at %s as %q, want %s as %q", tc.field, pos, name, tc.pos, tc.name)
		}
	}
}

func TestReadFileBound(t *testing.T) {
	t.Parallel()
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, bytes.Repeat([]byte(" "), apigee.MaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := apigee.ReadFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("ReadFile of %d bytes: %v", apigee.MaxFileBytes+1, err)
	}
}

// FuzzConvert: any input is converted or refused, never a panic, within a
// bounded time; every refusal is positioned in the file and quotes at most
// a prefix of a value; nothing encoding/json refuses is converted; what
// converts reads back with the Services and bindings it counted.
func FuzzConvert(f *testing.F) {
	for _, name := range []string{"targetservers.json", "wrapped.json", "guide.json", "guide-multiline.json", "guide-fixed.json"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`[{"name": 'a', host: foo, "port": 08080,}, … ]`))
	long := fuzzseed.Long(4096)
	f.Add([]byte(`[{"name": "` + long + `", "host": "` + long + `", "port": "` + long + `", "protocol": "` + long + `", "isEnabled": "` + long + `",
		"sSLInfo": {"enabled": "true", "clientAuthEnabled": "` + long + `", "trustStore": "ref://` + long + `", "protocols": ["` + long + `"], "commonName": {"value": "` + long + `", "wildcardMatch": true}}}]`))
	f.Add([]byte(`[{"name": "a", "host": "h", "port": 1, "sSLInfo": {"enabled": true, "ignoreValidationErrors": "` + long + `"}}, {"name": "A", "host": "h", "port": 2, "` + long + `": 1}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var (
			r   *apigee.Result
			err error
		)
		fuzzseed.Within(t, func() { r, err = apigee.Convert("f.json", data) })
		fuzzseed.CheckError(t, err)
		if err == nil {
			if !json.Valid(bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))) {
				t.Fatalf("converted input that is not JSON: %q", data)
			}
			m, err := r.Manifest()
			if err != nil {
				t.Fatalf("the converted YAML does not read back: %v\n%s", err, r.YAML)
			}
			services, bindings := 0, 0
			for _, res := range m.Resources() {
				switch {
				case res.GetService() != nil:
					services++
				case res.GetPolicyBinding() != nil:
					bindings++
				default:
					t.Fatalf("the converted manifest holds a %T", res.GetKind())
				}
			}
			if services != r.Services || bindings != r.Bindings {
				t.Fatalf("the manifest holds %d Services and %d bindings; the result counts %d and %d", services, bindings, r.Services, r.Bindings)
			}
			return
		}
		errs := []error{err}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		}
		for _, e := range errs {
			var me *manifest.Error
			if !errors.As(e, &me) {
				t.Fatalf("%q has no position", e)
			}
		}
	})
}

// TestNumbers: numbers follow JSON's grammar, as encoding/json reads them.
func TestNumbers(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"0", "-0", "8080", "1.5", "-1.25e10", "1E+2", "1e-2", "08080", "+1", ".5", "1.", "1e", "--1", "1.2.3", "-", "0x10", "1e+"} {
		in := []byte(`[{"name": "a", "host": "h", "port": ` + n + `}]`)
		_, err := apigee.Convert("n.json", in)
		syntaxOK := err == nil || !strings.Contains(err.Error(), "is not a JSON number")
		if want := json.Valid(in); syntaxOK != want && !strings.Contains(n, "x") {
			t.Errorf("%s: read as a number %v, encoding/json says %v (%v)", n, syntaxOK, want, err)
		}
	}
}

// TestTooManyProblems: a file that is not JSON at all stops the reader
// after 20 problems, the last line saying so.
func TestTooManyProblems(t *testing.T) {
	t.Parallel()
	_, err := apigee.Convert("t.json", []byte("["+strings.Repeat("'a', ", 30)+"]"))
	lines := strings.Split(fmt.Sprint(err), "\n")
	if len(lines) != 21 || lines[20] != "t.json:1:100: stopping after 20 problems: fix these and run the import again" {
		t.Errorf("%d lines:\n%s", len(lines), err)
	}
}
