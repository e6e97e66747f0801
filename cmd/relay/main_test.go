package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunNeedsToken(t *testing.T) {
	err := run(context.Background(), []string{"-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "NIGHTONA_RELAY_TOKEN") {
		t.Fatalf("relay without a token: %v", err)
	}
}

func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-agent", "/bin/false"},
			func(k string) string { return map[string]string{"NIGHTONA_RELAY_TOKEN": "tok"}[k] }, pw, io.Discard)
	}()
	buf := make([]byte, 128)
	n, err := pr.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(buf[:n]))
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		t.Fatalf("first stdout line %q, want 'listening <addr>'", line)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + addr + "/v1/stream")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("stream without a token: %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not stop")
	}
}

func TestAgentEnvDropsToken(t *testing.T) {
	env := agentEnv([]string{"PATH=/bin", "NIGHTONA_RELAY_TOKEN=secret", "HOME=/h"})
	if strings.Contains(strings.Join(env, " "), "secret") || len(env) != 2 {
		t.Fatalf("agent env %v still carries the relay token", env)
	}
}
