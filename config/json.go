package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"reflect"
	"strings"
	"unicode"
)

// ErrBadFile is wrapped by every LoadJSON error about the file's contents.
var ErrBadFile = errors.New("bad config file")

// fileError describes what is wrong inside a config file; it matches
// ErrBadFile without repeating those words in the message.
type fileError struct {
	path string
	msg  string
}

func (e *fileError) Error() string { return "config file " + e.path + ": " + e.msg }
func (e *fileError) Unwrap() error { return ErrBadFile }

// maxFileSize bounds what LoadJSON reads; a kcptun file is a few hundred bytes.
const maxFileSize = 1 << 20

// IgnoredKey is a key of a config file that LoadJSON skipped because it
// belongs to the other binary: kcptun users often share one file between
// client and server, so a server file may hold "conn" and a client file
// "listen".
type IgnoredKey struct {
	Key   string // as written in the file
	Owner string // the binary that uses the key: "client" or "server"
}

// LoadJSON reads a kcptun JSON file into dst, which must be a *Client or a
// *Server already holding defaults; keys absent from the file keep them.
// A key that only the other binary knows is skipped and returned in ignored,
// in the order of the file, once each, for the caller to warn about.
// Unlike kcptun, a key neither binary knows, a value of the wrong type, or
// anything after the object is an error naming the file and the key.
func LoadJSON(path string, dst any) (ignored []IgnoredKey, err error) {
	switch dst.(type) {
	case *Client, *Server:
	default:
		return nil, fmt.Errorf("config: LoadJSON wants *Client or *Server, got %T", dst)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, &fileError{path, fmt.Sprintf("larger than %d bytes", maxFileSize)}
	}
	// Decode into a copy so that dst is left untouched when the file is bad.
	switch d := dst.(type) {
	case *Client:
		tmp := *d
		if err = decodeJSON(data, &tmp); err == nil {
			ignored, err = sortKeys(data, clientKeys, serverKeys, "server")
			markWindows(data, &tmp.Common)
			for _, k := range objectKeys(data) {
				if foldKey(k) == foldKey("localaddr") {
					tmp.LocalAddrSet = true
				}
			}
		}
		if err == nil {
			*d = tmp
		}
	case *Server:
		tmp := *d
		if err = decodeJSON(data, &tmp); err == nil {
			ignored, err = sortKeys(data, serverKeys, clientKeys, "client")
			markWindows(data, &tmp.Common)
		}
		if err == nil {
			*d = tmp
		}
	}
	if err != nil {
		return nil, &fileError{path, err.Error()}
	}
	return ignored, nil
}

// clientKeys and serverKeys map the folded JSON keys of each binary (those
// of Common included) to their spelling in the struct tags.
var (
	clientKeys = jsonKeys(reflect.TypeFor[Client]())
	serverKeys = jsonKeys(reflect.TypeFor[Server]())
)

// jsonKeys collects the json tag names of struct type t and of the structs
// it embeds.
func jsonKeys(t reflect.Type) map[string]string {
	keys := make(map[string]string)
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Anonymous && f.Type.Kind() == reflect.Struct {
			maps.Copy(keys, jsonKeys(f.Type))
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		keys[foldKey(name)] = name
	}
	return keys
}

// foldKey folds a key the way encoding/json matches keys to fields (without
// regard to case), so that every key the decoder accepted is found here.
func foldKey(k string) string {
	return strings.Map(func(r rune) rune { return unicode.ToUpper(unicode.ToLower(r)) }, k)
}

// sortKeys checks every top-level key of data, which has already decoded
// cleanly: a key in own is used, a key in other is returned as ignored
// (owned by owner), any other key is an error.
func sortKeys(data []byte, own, other map[string]string, owner string) ([]IgnoredKey, error) {
	var ignored []IgnoredKey
	seen := make(map[string]bool)
	for _, k := range objectKeys(data) {
		fk := foldKey(k)
		if _, ok := own[fk]; ok || seen[fk] {
			continue
		}
		if _, ok := other[fk]; !ok {
			return nil, fmt.Errorf("unknown key %q", k)
		}
		seen[fk] = true
		ignored = append(ignored, IgnoredKey{Key: k, Owner: owner})
	}
	return ignored, nil
}

// markWindows notes the windows the file sets: they cap the automatic ones.
func markWindows(data []byte, c *Common) {
	for _, k := range objectKeys(data) {
		switch foldKey(k) {
		case foldKey("sndwnd"):
			c.SndWndSet = true
		case foldKey("rcvwnd"):
			c.RcvWndSet = true
		}
	}
}

// objectKeys returns the keys of the JSON object in data in the order they
// appear, or nothing if data does not hold an object (a null, say).
func objectKeys(data []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return keys
		}
		k, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return keys
		}
		keys = append(keys, k)
	}
	return keys
}

// decodeJSON decodes one JSON object into dst and explains failures in terms
// of keys and lines rather than Go types. Keys dst does not know are skipped
// here and judged by sortKeys.
func decodeJSON(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	err := dec.Decode(dst)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			return fmt.Errorf("%s: unexpected data after the JSON object", position(data, dec.InputOffset()))
		}
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return errors.New("empty file, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("unexpected end of file inside the JSON object")
	case errors.As(err, &syn):
		return fmt.Errorf("%s: invalid JSON: %s", position(data, syn.Offset-1), strings.TrimPrefix(syn.Error(), "json: "))
	case errors.As(err, &typ):
		key := typ.Field
		if i := strings.LastIndexByte(key, '.'); i >= 0 {
			key = key[i+1:]
		}
		if key == "" {
			return fmt.Errorf("want a JSON object, got %s", typ.Value)
		}
		return fmt.Errorf("key %q: want %s, got %s (%s)", key, kindOf(typ.Type.Kind().String()), typ.Value, position(data, typ.Offset))
	}
	return err
}

// kindOf names a Go kind the way a JSON file author thinks of it.
func kindOf(kind string) string {
	switch {
	case kind == "string":
		return "a string"
	case kind == "bool":
		return "true or false"
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "an integer"
	}
	return kind
}

// position turns a byte offset into "line L, column C" (both from 1).
func position(data []byte, offset int64) string {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	if offset < 0 {
		offset = 0
	}
	before := data[:offset]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}
