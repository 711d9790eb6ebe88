package model

import "strings"

// ParseKind reads a kind as users type it: "Service", "services", "svc",
// "route", "PolicyBinding", "bindings", "pb", "listener". It reports false for anything
// else.
func ParseKind(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "service", "services", "svc":
		return KindService, true
	case "route", "routes":
		return KindRoute, true
	case "policybinding", "policybindings", "binding", "bindings", "pb":
		return KindPolicyBinding, true
	case "listener", "listeners", "lis":
		return KindListener, true
	}
	return "", false
}
