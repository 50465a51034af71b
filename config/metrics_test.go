package config

import (
	"errors"
	"strings"
	"testing"
)

func TestMetricsListenAddr(t *testing.T) {
	tests := []struct {
		in, want string
		reason   string // "" = valid
	}{
		{"", "", ""},
		{"9100", "127.0.0.1:9100", ""},
		{":9100", "127.0.0.1:9100", ""},
		{"0", "127.0.0.1:0", ""},
		{"127.0.0.1:9100", "127.0.0.1:9100", ""},
		{"localhost:9100", "localhost:9100", ""},
		{"[::1]:9100", "[::1]:9100", ""},
		{"0.0.0.0:9100", "0.0.0.0:9100", ""},
		{"[::]:9100", "[::]:9100", ""},
		{"192.0.2.7:9100", "192.0.2.7:9100", ""},
		{"70000", "", "out of range"},
		{":70000", "", "out of range"},
		{"-1", "", "want a port, :port or IP:port"},
		{"9100x", "", "want a port, :port or IP:port"},
		{"127.0.0.1", "", "want a port, :port or IP:port"},
		{"::1", "", "want a port, :port or IP:port"},
		{"127.0.0.1:", "", "missing port"},
		{"127.0.0.1:http", "", "not a number"},
		{"example.com:9100", "", "not an IP address"},
		{"127.0.0.1:9100-9200", "", "not a number"},
	}
	for _, tt := range tests {
		got, err := MetricsListenAddr(tt.in)
		if tt.reason == "" {
			if err != nil || got != tt.want {
				t.Errorf("MetricsListenAddr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("MetricsListenAddr(%q) = %q, %v; want an error about %q", tt.in, got, err, tt.reason)
		}
	}
}

// TestValidateMetrics: a bad metrics value is one FieldError naming the key,
// on both sides; the default is off.
func TestValidateMetrics(t *testing.T) {
	if c, s := DefaultClient(), DefaultServer(); c.Metrics != "" || s.Metrics != "" {
		t.Fatalf("metrics default = %q / %q, want off", c.Metrics, s.Metrics)
	}
	for _, v := range []string{"70000", "example.com:9100", "127.0.0.1"} {
		c := validClient()
		c.Metrics = v
		checkField(t, "client metrics "+v, c.Validate(), "metrics", v)
		if err := c.Validate(); !errors.Is(err, ErrBadAddress) {
			t.Errorf("client metrics %q: %v does not match ErrBadAddress", v, err)
		}
		s := validServer()
		s.Metrics = v
		checkField(t, "server metrics "+v, s.Validate(), "metrics", v)
	}
	c := validClient()
	c.Metrics = ":9100"
	checkField(t, "client metrics :9100", c.Validate(), "", "")
}

func TestJSONMetricsKey(t *testing.T) {
	s := DefaultServer()
	if err := decodeJSON([]byte(`{"metrics": "127.0.0.1:9100"}`), s); err != nil {
		t.Fatal(err)
	}
	if s.Metrics != "127.0.0.1:9100" {
		t.Fatalf("metrics from JSON = %q", s.Metrics)
	}
}
