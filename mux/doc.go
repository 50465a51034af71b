// Package mux multiplexes many reliable byte streams over one connection using
// the smux wire protocol (versions 1 and 2), and is a drop-in replacement for
// github.com/xtaci/smux.
package mux
