package server

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"

	policyv1 "keyway.dev/gen/keyway/policy/v1"

	"keyway.dev/internal/limits"
	"keyway.dev/internal/model"
)

// checkRequest refuses what keywayctl refuses before it sends anything, so
// that the API and the CLI accept the same resources: every value within
// its documented maximum (docs/reference/limits.md), no field or enum value
// this service does not know, and each resource with its apiVersion and
// kind. It runs before any name of the request is used.
func checkRequest(req *policyv1.ApplyRequest) []model.Violation {
	var vs []model.Violation
	if u := req.ProtoReflect().GetUnknown(); len(u) > 0 {
		vs = append(vs, model.Violation{Field: "", Message: fmt.Sprintf("the request holds a field this service does not know (%s of protobuf data); check the client's version", limits.Size(len(u)))})
	}
	if p := req.GetProbe(); policyv1.ProbeMode_name[int32(p)] == "" {
		vs = append(vs, model.Violation{Field: "probe", Message: fmt.Sprintf("%d is not a probe mode; use PROBE_MODE_ON, PROBE_MODE_OFF or leave it out", int32(p))})
	}
	bounds := model.Bounds(req.GetResources())
	vs = append(vs, bounds...)
	if len(bounds) > 0 {
		return vs
	}
	for i, r := range req.GetResources() {
		apiVersion, kind, member, want := header(r)
		at := fmt.Sprintf("resources[%d].%s", i, member)
		if apiVersion == "" {
			vs = append(vs, model.Violation{Field: at + ".apiVersion", Message: fmt.Sprintf("apiVersion is required; set apiVersion: %s", model.APIVersion)})
		}
		if kind == "" {
			vs = append(vs, model.Violation{Field: at + ".kind", Message: fmt.Sprintf("kind is required; set kind: %s", want)})
		}
	}
	return vs
}

// header is a resource's apiVersion and kind, the member it is under and
// the kind that member holds.
func header(r *policyv1.Resource) (apiVersion, kind, member, want string) {
	switch x := r.GetKind().(type) {
	case *policyv1.Resource_Service:
		return x.Service.GetApiVersion(), x.Service.GetKind(), "service", model.KindService
	case *policyv1.Resource_Route:
		return x.Route.GetApiVersion(), x.Route.GetKind(), "route", model.KindRoute
	case *policyv1.Resource_PolicyBinding:
		return x.PolicyBinding.GetApiVersion(), x.PolicyBinding.GetKind(), "policyBinding", model.KindPolicyBinding
	case *policyv1.Resource_Listener:
		return x.Listener.GetApiVersion(), x.Listener.GetKind(), "listener", model.KindListener
	}
	return "", "", "", ""
}

// invalidRequest is [invalid] for requests that change nothing (Get,
// Delete, List): the same details, without "nothing was applied".
func invalidRequest(vs []model.Violation) error {
	err := invalid(vs)
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	msg := strings.Replace(ce.Message(), "; nothing was applied", " in the request", 1)
	out := connect.NewError(ce.Code(), errors.New(msg))
	for _, d := range ce.Details() {
		out.AddDetail(d)
	}
	return out
}
