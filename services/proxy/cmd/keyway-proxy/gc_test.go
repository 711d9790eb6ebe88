package main

import (
	"math"
	"strings"
	"testing"
)

// TestGCSettingsPrecedence: a flag given wins, then GOGC / GOMEMLIMIT, then
// the node's defaults (200, no limit), as an operator expects.
func TestGCSettingsPrecedence(t *testing.T) {
	for _, tc := range []struct {
		name               string
		set                map[string]bool
		flags              gcSettings
		env                map[string]string
		percent, limit     int64
		percentFrom, limFr string
	}{
		{"defaults", nil, gcSettings{percent: "200"}, nil, 200, math.MaxInt64, "default", "default"},
		{"GOGC and GOMEMLIMIT over the defaults", nil, gcSettings{percent: "200"}, map[string]string{"GOGC": "100", "GOMEMLIMIT": "512MiB"}, 100, 512 << 20, "GOGC", "GOMEMLIMIT"},
		{"GOGC off", nil, gcSettings{percent: "200"}, map[string]string{"GOGC": "off"}, -1, math.MaxInt64, "GOGC", "default"},
		{"flags over GOGC and GOMEMLIMIT", map[string]bool{"gc-percent": true, "memory-limit": true}, gcSettings{percent: "400", limit: "1073741824"},
			map[string]string{"GOGC": "100", "GOMEMLIMIT": "512MiB"}, 400, 1 << 30, "flag", "flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := tc.flags.resolve(tc.set, func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if a.percent != tc.percent || a.limit != tc.limit || a.percentFrom != tc.percentFrom || a.limitFrom != tc.limFr {
				t.Errorf("got percent %d from %s, limit %d from %s; want %d from %s, %d from %s",
					a.percent, a.percentFrom, a.limit, a.limitFrom, tc.percent, tc.percentFrom, tc.limit, tc.limFr)
			}
		})
	}
}

// TestGCSettingsRefused: values out of range name the flag or variable.
func TestGCSettingsRefused(t *testing.T) {
	for _, tc := range []struct {
		set   map[string]bool
		flags gcSettings
		env   map[string]string
		want  string
	}{
		{map[string]bool{"gc-percent": true}, gcSettings{percent: "0"}, nil, "--gc-percent"},
		{map[string]bool{"gc-percent": true}, gcSettings{percent: "lots"}, nil, "--gc-percent"},
		{nil, gcSettings{percent: "200"}, map[string]string{"GOGC": "-5"}, "GOGC"},
		{map[string]bool{"memory-limit": true}, gcSettings{percent: "200", limit: "1MiB"}, nil, "--memory-limit"},
		{map[string]bool{"memory-limit": true}, gcSettings{percent: "200", limit: "1GB"}, nil, "--memory-limit"},
		{map[string]bool{"memory-limit": true}, gcSettings{percent: "200", limit: "9999999TiB"}, nil, "--memory-limit"},
		{nil, gcSettings{percent: "200"}, map[string]string{"GOMEMLIMIT": "x"}, "GOMEMLIMIT"},
	} {
		_, err := tc.flags.resolve(tc.set, func(k string) string { return tc.env[k] })
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("%+v %v: error %v, want one naming %s", tc.flags, tc.env, err, tc.want)
		}
	}
}
