package main

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"256MiB", 256 << 20, true},
		{"1GiB", 1 << 30, true},
		{"64KiB", 64 << 10, true},
		{"1000", 1000, true},
		{"12B", 12, true},
		{"0", 0, false},
		{"-5MiB", 0, false},
		{"MiB", 0, false},
		{"1.5GiB", 0, false},
		{"2TiB", 0, false},
		{"2048GiB", 0, false},
	}
	for _, c := range cases {
		got, err := parseSize(c.in)
		if c.ok && (err != nil || got != c.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
		if !c.ok && !errors.Is(err, errSize) {
			t.Errorf("parseSize(%q) = %d, %v; want errSize", c.in, got, err)
		}
	}
}
