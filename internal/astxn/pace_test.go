package astxn

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"
)

type countingTransport struct{ calls []string }

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.calls = append(c.calls, req.URL.Path+" "+req.Header.Get("Authorization"))
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: req}, nil
}

// Each sync loop (token, user, filter) waits for its interval; other loops
// and other requests go straight through.
func TestPaceSyncs(t *testing.T) {
	inner := &countingTransport{}
	cli := &http.Client{Transport: inner}
	PaceSyncs(cli, time.Hour)
	timeout := "30000"
	get := func(ctx context.Context, path, token string) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://hs"+path+"?filter=1&timeout="+timeout, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := cli.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	ctx := context.Background()
	if err := get(ctx, "/_matrix/client/v3/sync", "crypto"); err != nil {
		t.Fatalf("first sync of a loop must go at once: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := get(cancelled, "/_matrix/client/v3/sync", "crypto"); !errors.Is(err, context.Canceled) {
		t.Fatalf("second sync within the interval: %v, want it held until its time (here: cancelled)", err)
	}
	if err := get(ctx, "/_matrix/client/v3/sync", "ephemeral"); err != nil {
		t.Fatalf("another loop's sync must not wait: %v", err)
	}
	if err := get(ctx, "/_matrix/client/v1/media/download/hs/x", "crypto"); err != nil {
		t.Fatalf("other requests must not wait: %v", err)
	}
	timeout = "0"
	if err := get(cancelled, "/_matrix/client/v3/sync", "crypto"); err != nil {
		t.Fatalf("a sync that does not long-poll must go at once: %v", err)
	}
	if len(inner.calls) != 4 {
		t.Fatalf("requests sent %v, want four (the held sync never went)", inner.calls)
	}
}
