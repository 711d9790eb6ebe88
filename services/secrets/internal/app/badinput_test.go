package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	secretsv1 "keyway.dev/gen/keyway/secrets/v1"
	"keyway.dev/gen/keyway/secrets/v1/secretsv1connect"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/testca"
	"keyway.dev/secrets/internal/app"
)

// TestSecretsBadInputTable sends bad names and PEM to every secrets API
// call: each is refused with an error naming the field, quoting at most a
// prefix of the value, logging no more, and storing nothing; a good put
// still works after the table.
func TestSecretsBadInputTable(t *testing.T) {
	t.Parallel()
	s := start(t, app.Config{Backend: "local", Dir: t.TempDir()})
	ctx := t.Context()
	api := s.API
	ca := testca.New(t, "bad input CA")
	gw := ca.Client("gw")
	meg4 := strings.Repeat("n", 4<<20)
	long := strings.Repeat("n", 4100)
	names := map[string]string{
		"4100 chars": long, "4 MB": meg4, "NUL": "a\x00b", "unicode": "ködé", "path separator": "../etc",
		"wildcard *": "*", "wildcard >": ">", "dot": "a.b", "empty": "",
	}
	type badCase struct {
		name, field string
		call        func(context.Context) error
	}
	var cases []badCase
	for what, n := range names {
		// A name larger than a request may be is refused as a body.
		field := func(f string) string {
			if len(n) > limits.SecretsRequestBytes {
				return "request body"
			}
			return f
		}
		cases = append(cases,
			badCase{"put truststore name " + what, field("name"), func(ctx context.Context) error {
				_, err := api.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: n, CertificatesPem: string(ca.CertPEM())}))
				return err
			}},
			badCase{"put alias keystore " + what, field("keystore"), func(ctx context.Context) error {
				_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: n, Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: string(gw.KeyPEM)}))
				return err
			}},
			badCase{"get alias name " + what, field("alias"), func(ctx context.Context) error {
				_, err := api.GetAlias(ctx, connect.NewRequest(&secretsv1.GetAliasRequest{Keystore: "edge", Alias: n}))
				return err
			}},
			badCase{"delete truststore name " + what, field("name"), func(ctx context.Context) error {
				_, err := api.DeleteTruststore(ctx, connect.NewRequest(&secretsv1.DeleteTruststoreRequest{Name: n}))
				return err
			}},
		)
	}
	huge := strings.Repeat(string(ca.CertPEM()), limits.BundlePEMBytes/len(ca.CertPEM())+1)
	cases = append(cases,
		badCase{"truststore PEM over 512 KiB", "certificates_pem", func(ctx context.Context) error {
			_, err := api.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "big", CertificatesPem: huge}))
			return err
		}},
		badCase{"certificate PEM over 64 KiB", "certificate_pem", func(ctx context.Context) error {
			_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: huge[:limits.CertificatePEMBytes+1], PrivateKeyPem: string(gw.KeyPEM)}))
			return err
		}},
		badCase{"key PEM over 16 KiB", "private_key_pem", func(ctx context.Context) error {
			_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: string(gw.CertPEM), PrivateKeyPem: strings.Repeat("k", limits.KeyPEMBytes+1)}))
			return err
		}},
		badCase{"malformed certificate PEM", "certificate_pem", func(ctx context.Context) error {
			_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", CertificatePem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", PrivateKeyPem: string(gw.KeyPEM)}))
			return err
		}},
		badCase{"malformed truststore PEM", "certificates_pem", func(ctx context.Context) error {
			_, err := api.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "bad", CertificatesPem: "not PEM at all"}))
			return err
		}},
		badCase{"pki alt names 101", "pki.alt_names", func(ctx context.Context) error {
			_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{Role: "r", CommonName: "gw", AltNames: make([]string, limits.PKIAltNames+1)}}))
			return err
		}},
		badCase{"pki role 4100 chars", "pki.role", func(ctx context.Context) error {
			_, err := api.PutAlias(ctx, connect.NewRequest(&secretsv1.PutAliasRequest{Keystore: "edge", Alias: "gw", Pki: &secretsv1.PKISpec{Role: long, CommonName: "gw"}}))
			return err
		}},
		badCase{"unknown field (JSON)", "certificatesPemm", func(ctx context.Context) error {
			return postJSON(ctx, s.APIURL+secretsv1connect.SecretsServicePutTruststoreProcedure, []byte(`{"name":"x","certificatesPemm":"y"}`))
		}},
		badCase{"body over 1 MiB", "request body", func(ctx context.Context) error {
			return postJSON(ctx, s.APIURL+secretsv1connect.SecretsServicePutTruststoreProcedure, []byte(`{"name":"x","certificatesPem":"`+strings.Repeat("y", 30<<20)+`"}`))
		}},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx)
			if err == nil {
				t.Fatalf("accepted; want an error naming %s", tc.field)
			}
			msg := err.Error()
			if ce, ok := errors.AsType[*connect.Error](err); ok {
				msg = ce.Message()
				for _, d := range ce.Details() {
					if v, derr := d.Value(); derr == nil {
						msg += "\n" + fmt.Sprint(v)
					}
				}
			}
			if !strings.Contains(msg, tc.field) {
				t.Errorf("the error does not name %s:\n%.600s", tc.field, msg)
			}
			if len(err.Error()) > 4096 {
				t.Errorf("the error is %d bytes long", len(err.Error()))
			}
		})
	}
	t.Logf("secrets bad-input table: %d cases through the API", len(cases))
	if n := len(s.Logs.String()); n > 1<<20 {
		t.Errorf("the service logged %d bytes for the table: a log line carries a bad value whole", n)
	}
	ks, err := api.ListKeystores(ctx, connect.NewRequest(&secretsv1.ListKeystoresRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := api.ListTruststores(ctx, connect.NewRequest(&secretsv1.ListTruststoresRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Msg.GetKeystores())+len(ts.Msg.GetTruststores()) != 0 {
		t.Errorf("stored: %v %v", ks.Msg, ts.Msg)
	}
	// Later writes still work.
	if _, err := api.PutTruststore(ctx, connect.NewRequest(&secretsv1.PutTruststoreRequest{Name: "good", CertificatesPem: string(ca.CertPEM())})); err != nil {
		t.Fatalf("a good put after the table: %v", err)
	}
}

func postJSON(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
}
