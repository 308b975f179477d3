package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRolloutRequests: the rollout methods' methods, paths, queries and
// bodies (an action without a reason sends none; ids are escaped).
func TestRolloutRequests(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, query, ct, body string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Header.Get("Content-Type"), string(b)}
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1/rollouts" {
			w.Write([]byte(`[]`))
			return
		}
		w.Write([]byte(`{"id":"rol-1","state":"paused"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL, "tgk_key-1_s")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ten := 10
	for _, tc := range []struct {
		call func() error
		want seen
	}{
		{func() error {
			_, err := c.ListRollouts(ctx, RolloutFilter{Fleet: "edge", State: "running"})
			return err
		},
			seen{"GET", "/api/v1/rollouts", "fleet=edge&state=running", "", ""}},
		{func() error {
			_, err := c.CreateRollout(ctx, RolloutCreate{Package: "m@1", Fleet: "edge", Waves: []int{5, 100}, FailureThreshold: &ten})
			return err
		}, seen{"POST", "/api/v1/rollouts", "", "application/json", `{"package":"m@1","fleet":"edge","waves":[5,100],"failure_threshold":10}`}},
		{func() error { _, err := c.GetRollout(ctx, "../x"); return err }, seen{"GET", "/api/v1/rollouts/..%2Fx", "", "", ""}},
		{func() error { _, err := c.PauseRollout(ctx, "rol-1", "look"); return err },
			seen{"POST", "/api/v1/rollouts/rol-1/pause", "", "application/json", `{"reason":"look"}`}},
		{func() error { _, err := c.ResumeRollout(ctx, "rol-1"); return err }, seen{"POST", "/api/v1/rollouts/rol-1/resume", "", "", ""}},
		{func() error { _, err := c.AbortRollout(ctx, "rol-1", ""); return err }, seen{"POST", "/api/v1/rollouts/rol-1/abort", "", "", ""}},
		{func() error { _, err := c.RollbackRollout(ctx, "rol-1", "bad"); return err },
			seen{"POST", "/api/v1/rollouts/rol-1/rollback", "", "application/json", `{"reason":"bad"}`}},
	} {
		if err := tc.call(); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s != tc.want {
			t.Errorf("request = %+v, want %+v", s, tc.want)
		}
	}
}
