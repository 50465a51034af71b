package config

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "conf.json")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A client file using every key kcptun's client knows, as kcptun documents them.
const kcptunClientFile = `{
  "localaddr": "127.0.0.1:12948",
  "remoteaddr": "203.0.113.5:29900-29910",
  "key": "very secret",
  "crypt": "salsa20",
  "mode": "fast2",
  "conn": 4,
  "autoexpire": 60,
  "scavengettl": 30,
  "mtu": 1400,
  "ratelimit": 1000000,
  "sndwnd": 256,
  "rcvwnd": 2048,
  "datashard": 5,
  "parityshard": 2,
  "dscp": 46,
  "nocomp": true,
  "acknodelay": true,
  "nodelay": 1,
  "interval": 20,
  "resend": 2,
  "nc": 1,
  "sockbuf": 16777217,
  "smuxver": 1,
  "smuxbuf": 8388608,
  "framesize": 16384,
  "streambuf": 4194304,
  "keepalive": 5,
  "closewait": 3,
  "snmplog": "./snmp-20060102.log",
  "snmpperiod": 30,
  "log": "/tmp/kcptun.log",
  "quiet": true,
  "tcp": false,
  "pprof": true,
  "qpp": false,
  "qpp-count": 61
}`

const kcptunServerFile = `{
  "listen": ":29900",
  "target": "127.0.0.1:8388",
  "key": "very secret",
  "crypt": "aes-128-gcm",
  "mode": "fast3",
  "mtu": 1200,
  "sndwnd": 2048,
  "rcvwnd": 2048,
  "datashard": 10,
  "parityshard": 3,
  "dscp": 0,
  "nocomp": false,
  "acknodelay": false,
  "nodelay": 0,
  "interval": 50,
  "resend": 0,
  "nc": 0,
  "sockbuf": 4194304,
  "smuxver": 2,
  "smuxbuf": 4194304,
  "framesize": 8192,
  "streambuf": 2097152,
  "keepalive": 10,
  "closewait": 30,
  "snmplog": "",
  "snmpperiod": 60,
  "log": "",
  "quiet": false,
  "tcp": false,
  "pprof": false,
  "qpp": false,
  "qpp-count": 61,
  "ratelimit": 0,
  "transport": "tcp",
  "pprofaddr": "127.0.0.1:7000"
}`

func TestLoadJSONKcptunClientFile(t *testing.T) {
	c := DefaultClient()
	ignored, err := LoadJSON(writeFile(t, kcptunClientFile), c)
	if err != nil || len(ignored) != 0 {
		t.Fatalf("LoadJSON = %v, %v; want no error and no ignored key", ignored, err)
	}
	want := DefaultClient()
	want.LocalAddr, want.RemoteAddr = "127.0.0.1:12948", "203.0.113.5:29900-29910"
	want.Key, want.Crypt, want.Mode = "very secret", "salsa20", "fast2"
	want.Conn, want.AutoExpire, want.ScavengeTTL = 4, 60, 30
	want.MTU, want.RateLimit, want.SndWnd, want.RcvWnd = 1400, 1000000, 256, 2048
	want.SndWndSet, want.RcvWndSet = true, true // the file names them: they cap the automatic windows
	want.LocalAddrSet = true
	want.DataShard, want.ParityShard, want.DSCP = 5, 2, 46
	want.NoComp, want.AckNodelay = true, true
	want.NoDelay, want.Interval, want.Resend, want.NoCongestion = 1, 20, 2, 1
	want.SockBuf, want.SmuxVer, want.SmuxBuf, want.FrameSize, want.StreamBuf = 16777217, 1, 8388608, 16384, 4194304
	want.KeepAlive, want.CloseWait = 5, 3
	want.SnmpLog, want.SnmpPeriod, want.Log, want.Quiet = "./snmp-20060102.log", 30, "/tmp/kcptun.log", true
	want.Pprof, want.QPPCount = true, 61
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("loaded\n%+v\nwant\n%+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("kcptun client file does not validate: %v", err)
	}
}

func TestLoadJSONKcptunServerFile(t *testing.T) {
	s := DefaultServer()
	ignored, err := LoadJSON(writeFile(t, kcptunServerFile), s)
	if err != nil || len(ignored) != 0 {
		t.Fatalf("LoadJSON = %v, %v; want no error and no ignored key", ignored, err)
	}
	if s.Listen != ":29900" || s.Target != "127.0.0.1:8388" || s.Crypt != "aes-128-gcm" || s.Mode != "fast3" ||
		s.MTU != 1200 || s.SndWnd != 2048 || s.CloseWait != 30 || s.Transport != "tcp" || s.PprofAddr != "127.0.0.1:7000" {
		t.Fatalf("loaded %+v", s)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("kcptun server file does not validate: %v", err)
	}
}

func TestLoadJSONKeepsDefaultsForAbsentKeys(t *testing.T) {
	c := DefaultClient()
	if _, err := LoadJSON(writeFile(t, `{"key": "k", "mtu": 1200}`), c); err != nil {
		t.Fatal(err)
	}
	want := DefaultClient()
	want.Key, want.MTU = "k", 1200
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

// TestLoadJSONSharedFile: one kcptun file holding both sides' settings loads
// into either binary; the keys of the other side are skipped and reported
// once each, in the order of the file, and leave the defaults alone.
func TestLoadJSONSharedFile(t *testing.T) {
	const shared = `{
  "listen": ":29900",
  "target": "127.0.0.1:8388",
  "localaddr": "127.0.0.1:12948",
  "remoteaddr": "203.0.113.5:29900",
  "key": "shared secret",
  "crypt": "aes-128",
  "conn": 4,
  "autoexpire": 60,
  "scavengettl": 30,
  "mtu": 1200,
  "Conn": 5,
  "TARGET": "127.0.0.1:1"
}`
	p := writeFile(t, shared)

	c := DefaultClient()
	ignored, err := LoadJSON(p, c)
	if err != nil {
		t.Fatal(err)
	}
	wantIgnored := []IgnoredKey{{"listen", "server"}, {"target", "server"}}
	if !reflect.DeepEqual(ignored, wantIgnored) {
		t.Errorf("client: ignored %v, want %v", ignored, wantIgnored)
	}
	if c.LocalAddr != "127.0.0.1:12948" || c.RemoteAddr != "203.0.113.5:29900" || c.Conn != 5 || c.AutoExpire != 60 ||
		c.ScavengeTTL != 30 || c.Key != "shared secret" || c.Crypt != "aes-128" || c.MTU != 1200 {
		t.Errorf("client loaded %+v", c)
	}

	s := DefaultServer()
	ignored, err = LoadJSON(p, s)
	if err != nil {
		t.Fatal(err)
	}
	wantIgnored = []IgnoredKey{{"localaddr", "client"}, {"remoteaddr", "client"}, {"conn", "client"},
		{"autoexpire", "client"}, {"scavengettl", "client"}}
	if !reflect.DeepEqual(ignored, wantIgnored) {
		t.Errorf("server: ignored %v, want %v", ignored, wantIgnored)
	}
	want := DefaultServer()
	want.Listen, want.Target, want.Key, want.Crypt, want.MTU = ":29900", "127.0.0.1:1", "shared secret", "aes-128", 1200
	if !reflect.DeepEqual(s, want) {
		t.Errorf("server loaded\n%+v\nwant\n%+v", s, want)
	}
}

// TestLoadJSONOtherSideFollowsTheStructs: every setting one binary has and
// the other lacks, as a full file of the first binary's defaults writes it, is
// ignored by the other binary; the shared settings are not.
func TestLoadJSONOtherSideFollowsTheStructs(t *testing.T) {
	keysOf := func(v any) []string {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		return keys
	}
	only := func(a, b []string) map[string]bool {
		out := map[string]bool{}
		for _, k := range a {
			if !slices.Contains(b, k) {
				out[k] = true
			}
		}
		return out
	}
	clientKeys, serverKeys := keysOf(DefaultClient()), keysOf(DefaultServer())
	for _, tt := range []struct {
		from  any
		into  any
		owner string
		want  map[string]bool
	}{
		{DefaultClient(), DefaultServer(), "client", only(clientKeys, serverKeys)},
		{DefaultServer(), DefaultClient(), "server", only(serverKeys, clientKeys)},
	} {
		if len(tt.want) < 2 {
			t.Fatalf("%s-only keys: %v; want at least two", tt.owner, tt.want)
		}
		b, err := json.Marshal(tt.from)
		if err != nil {
			t.Fatal(err)
		}
		ignored, err := LoadJSON(writeFile(t, string(b)), tt.into)
		if err != nil {
			t.Fatalf("a full %s file: %v", tt.owner, err)
		}
		got := map[string]bool{}
		for _, k := range ignored {
			if k.Owner != tt.owner || got[k.Key] {
				t.Errorf("ignored %+v twice or with the wrong owner", k)
			}
			got[k.Key] = true
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("a full %s file: ignored %v, want %v", tt.owner, got, tt.want)
		}
	}
}

func TestLoadJSONErrors(t *testing.T) {
	tests := []struct {
		name    string
		content string
		server  bool
		want    []string
	}{
		{"wrong type number", `{"mtu": "1350"}`, false, []string{`key "mtu"`, "want an integer", "got string", "line 1"}},
		{"wrong type string", `{"key": 42}`, false, []string{`key "key"`, "want a string", "got number"}},
		{"wrong type bool", `{"nocomp": "yes"}`, true, []string{`key "nocomp"`, "want true or false"}},
		{"fraction", `{"sndwnd": 1.5}`, false, []string{`key "sndwnd"`, "want an integer", "1.5"}},
		{"overflow", `{"sndwnd": 1e40}`, true, []string{`key "sndwnd"`, "want an integer"}},
		{"unknown key", `{"mtu": 1350, "mtuu": 1}`, false, []string{`unknown key "mtuu"`}},
		{"unknown key in a server file", `{"listen": ":1", "mtuu": 1}`, true, []string{`unknown key "mtuu"`}},
		{"unknown key after a server key", `{"listen": ":1", "targett": "x"}`, false, []string{`unknown key "targett"`}},
		{"unknown key after a client key", `{"conn": 2, "autoexpir": 1}`, true, []string{`unknown key "autoexpir"`}},
		{"wrong type beside a client key", `{"conn": 2, "mtu": "1350"}`, true, []string{`key "mtu"`, "want an integer"}},
		{"syntax", "{\n  \"mtu\": 1350,\n  \"key\": \"x\",,\n}", false, []string{"line 3, column 14", "invalid JSON"}},
		{"trailing comma", `{"mtu": 1350,}`, false, []string{"line 1, column 14", "invalid JSON"}},
		{"truncated", `{"mtu": 13`, false, []string{"unexpected end of file"}},
		{"empty", ``, false, []string{"empty file"}},
		{"array", `[]`, false, []string{"want a JSON object, got array"}},
		{"two objects", `{"mtu": 1350} {"mtu": 1}`, false, []string{"unexpected data after the JSON object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.content)
			var dst, orig any = DefaultClient(), DefaultClient()
			if tt.server {
				dst, orig = DefaultServer(), DefaultServer()
			}
			ignored, err := LoadJSON(p, dst)
			if !errors.Is(err, ErrBadFile) || ignored != nil {
				t.Fatalf("LoadJSON = %v, want ErrBadFile", err)
			}
			msg := err.Error()
			for _, w := range append(tt.want, p) {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, "config.") {
				t.Errorf("error %q spans lines or leaks Go type names", msg)
			}
			if !reflect.DeepEqual(dst, orig) {
				t.Errorf("a failed load changed the destination: %+v", dst)
			}
		})
	}
}

func TestLoadJSONMissingFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nope.json")
	_, err := LoadJSON(p, DefaultServer())
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), p) {
		t.Fatalf("LoadJSON(missing) = %v, want fs.ErrNotExist naming the path", err)
	}
}

func TestLoadJSONWrongDestination(t *testing.T) {
	var c Common
	if _, err := LoadJSON(writeFile(t, `{}`), &c); err == nil || !strings.Contains(err.Error(), "*config.Common") {
		t.Fatalf("LoadJSON(*Common) = %v", err)
	}
}

func TestLoadJSONTooLarge(t *testing.T) {
	big := `{"log": "` + strings.Repeat("a", maxFileSize) + `"}`
	if _, err := LoadJSON(writeFile(t, big), DefaultClient()); !errors.Is(err, ErrBadFile) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("LoadJSON(big) = %v", err)
	}
}

// FuzzLoadJSON feeds arbitrary bytes through LoadJSON and Validate. Neither may
// panic, every error is one line, and whatever loads survives a round trip
// through encoding/json unchanged.
func FuzzLoadJSON(f *testing.F) {
	for _, seed := range []string{
		kcptunClientFile, kcptunServerFile, `{}`, `null`, `{"mtu": -1}`, `{"remoteaddr": "h:2-1"}`,
		`{"listen": ":0-0"}`, `{"qpp-count": 1e9}`, `{"key": "\u0000"}`, "{\"mtu\":\n", `[`,
	} {
		f.Add([]byte(seed))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "fuzz.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, dst := range []interface{ Validate() error }{DefaultClient(), DefaultServer()} {
			_, err := LoadJSON(p, dst)
			if err != nil {
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("multi-line error %q", err)
				}
				continue
			}
			if err := dst.Validate(); err != nil && strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			again, err := json.Marshal(dst)
			if err != nil {
				t.Fatal(err)
			}
			var back interface{ Validate() error } = DefaultClient()
			if _, ok := dst.(*Server); ok {
				back = DefaultServer()
			}
			p2 := filepath.Join(dir, "again.json")
			if err := os.WriteFile(p2, again, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadJSON(p2, back); err != nil {
				t.Fatalf("re-loading our own output %s: %v", again, err)
			}
			// Our output names every window, so the windows count as
			// set by the user when it is read back.
			switch d := dst.(type) {
			case *Client:
				d.SndWndSet, d.RcvWndSet, d.LocalAddrSet = true, true, true
			case *Server:
				d.SndWndSet, d.RcvWndSet = true, true
			}
			if !reflect.DeepEqual(back, dst) {
				t.Fatalf("round trip changed the settings:\n%+v\n%+v", dst, back)
			}
		}
	})
}
