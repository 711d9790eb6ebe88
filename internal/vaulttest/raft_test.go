package vaulttest_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"keyway.dev/internal/vaulttest"
)

// Three servers on raft form one cluster: a write through one node is read
// through another, and when the active node dies a standby takes over
// with the data.
func TestRaftClusterSurvivesItsActiveNode(t *testing.T) {
	c := vaulttest.StartRaft(t, 3)
	c.EnableKV()
	c.Write("secret/data/probe", map[string]any{"data": map[string]any{"v": "1"}})
	active := c.Active(10 * time.Second)
	active.Kill()
	next := c.Active(60 * time.Second)
	if next == active {
		t.Fatalf("the killed node %s is still reported active", active.ID)
	}
	var got struct {
		Data struct {
			Data map[string]any `json:"data"`
		} `json:"data"`
	}
	if err := c.Do(context.Background(), http.MethodGet, "secret/data/probe", nil, &got); err != nil || got.Data.Data["v"] != "1" {
		t.Fatalf("reading after the failover: %v %v", err, got)
	}
	active.Start()
	if h := active.Health(); h != http.StatusTooManyRequests {
		t.Errorf("restarted node health %d, want 429 (standby)", h)
	}
}
