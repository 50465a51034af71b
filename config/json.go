package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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

// LoadJSON reads a kcptun JSON file into dst, which must be a *Client or a
// *Server already holding defaults; keys absent from the file keep them.
// Unlike kcptun, a key dst does not know, a value of the wrong type, or
// anything after the object is an error naming the file and the key.
func LoadJSON(path string, dst any) error {
	switch dst.(type) {
	case *Client, *Server:
	default:
		return fmt.Errorf("config: LoadJSON wants *Client or *Server, got %T", dst)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return &fileError{path, fmt.Sprintf("larger than %d bytes", maxFileSize)}
	}
	// Decode into a copy so that dst is left untouched when the file is bad.
	switch d := dst.(type) {
	case *Client:
		tmp := *d
		err = decodeJSON(data, &tmp)
		if err == nil {
			*d = tmp
		}
	case *Server:
		tmp := *d
		err = decodeJSON(data, &tmp)
		if err == nil {
			*d = tmp
		}
	}
	if err != nil {
		return &fileError{path, err.Error()}
	}
	return nil
}

// decodeJSON decodes one JSON object into dst and explains failures in terms
// of keys and lines rather than Go types.
func decodeJSON(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
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
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("unknown key %s", name)
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
