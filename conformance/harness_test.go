package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/client"
	"github.com/warden-iot/warden/internal/syncbuf"
)

// binDir holds wardend, wardenctl and a copy of this test binary, readable
// by the other uids the tests run clients as.
var binDir string

// otherUID and otherGID are an unprivileged identity for tests that need a
// second caller; the daemon's sockets are given group otherGID.
const (
	uidA     = 1000
	uidB     = 1001
	otherGID = 4242
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	dir, err := os.MkdirTemp("", "warden-conformance-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755)
	binDir = dir
	build := exec.Command("go", "build", "-o", dir+"/", "github.com/warden-iot/warden/cmd/wardend", "github.com/warden-iot/warden/cmd/wardenctl")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "conformance: building wardend and wardenctl:", err)
		os.Exit(1)
	}
	if err := copyFile(os.Args[0], filepath.Join(dir, "conformance.test"), 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

// needRoot fails (in CI) or skips (elsewhere) a test that must switch uids.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test runs clients as other uids and needs root; CI runs as root")
	}
	t.Skip("needs root to run clients as other uids")
}

// daemon is a wardend started by a test.
type daemon struct {
	t       *testing.T
	dir     string // config, state and sockets live under it
	cfgPath string
	cmd     *exec.Cmd
	stderr  *syncbuf.Buffer // exec copies into it while tests read it
	exited  chan struct{}
	// env is added to wardend's environment (e.g. SOFTHSM2_CONF).
	env []string
}

// sockets lists every socket of a daemon and an api-version it accepts.
var sockets = []struct{ name, version string }{
	{"broker", "2026-12-01"},
	{"keyd", "2021-05-01"},
	{"certd", "2020-09-01"},
	{"identityd", "2020-09-01"},
	{"tpmd", "2020-09-01"},
}

// baseConfig is the [warden] part every test daemon gets; extra is appended.
func baseConfig(dir string) string {
	return fmt.Sprintf(`
[warden]
state_dir = %q
socket_dir = %q
socket_group = "%d"

[warden.tokens]
default_ttl = "10m"
max_ttl = "1h"

[[principal]]
uid = %d
name = "agent-a"
keys = ["a-*"]

[[principal]]
uid = %d
name = "agent-b"
idtype = ["module"]
`, filepath.Join(dir, "state"), filepath.Join(dir, "run"), otherGID, uidA, uidB)
}

// newDir returns a temp dir that other uids can traverse, removed at cleanup.
func newDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "warden-conf-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startDaemon writes a config (baseConfig + extra) in a new dir and starts wardend.
func startDaemon(t *testing.T, extra string) *daemon {
	t.Helper()
	return startDaemonEnv(t, extra, nil)
}

// startDaemonEnv is startDaemon with env added to wardend's environment.
func startDaemonEnv(t *testing.T, extra string, env []string) *daemon {
	t.Helper()
	dir := newDir(t)
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(baseConfig(dir)+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, cfgPath: cfg, env: env}
	d.start()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.stderr = &syncbuf.Buffer{}
	d.cmd = exec.Command(filepath.Join(binDir, "wardend"), "-c", d.cfgPath, "-log-level", "debug")
	d.cmd.Stderr = d.stderr
	if d.env != nil {
		d.cmd.Env = append(os.Environ(), d.env...)
	}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	d.waitReady()
}

// waitReady polls /health on broker.sock until it answers or the daemon dies.
func (d *daemon) waitReady() {
	d.t.Helper()
	c := client.New(d.socket("broker"), "2026-12-01")
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Do(ctx, "GET", "/health", nil, nil)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-d.exited:
			d.t.Fatalf("wardend exited during start-up: %s", d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("wardend not ready after 60s: %v\n%s", err, d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a graceful exit (SIGKILL after 15 s).
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("wardend did not stop on SIGTERM within 15s")
	}
}

func (d *daemon) restart() {
	d.t.Helper()
	d.stop()
	d.start()
}

func (d *daemon) socket(name string) string {
	if name == "broker" {
		return filepath.Join(d.dir, "run", "broker.sock")
	}
	return filepath.Join(d.dir, "run", name+".sock")
}

// response is one HTTP answer as seen by a client.
type response struct {
	Status int             `json:"status"`
	Body   json.RawMessage `json:"body"`
	Err    string          `json:"err,omitempty"`
}

func (r response) message() string {
	var m struct {
		Message string `json:"message"`
	}
	json.Unmarshal(r.Body, &m)
	return m.Message
}

// request is what a client sends; it is also the helper process's argument.
type request struct {
	Socket string            `json:"socket"`
	Method string            `json:"method"`
	Target string            `json:"target"`
	Header map[string]string `json:"header,omitempty"`
	Body   string            `json:"body,omitempty"`
	// NoBody sends no body at all (Body == "" sends an empty one).
}

// socketCase is one request of a table-driven socket test: sent as uid
// (0: this process, root in CI), its answer must have status and a body
// containing want.
type socketCase struct {
	name   string
	uid    uint32
	method string
	target string
	body   string
	status int
	want   string
}

// runCases sends each case to socket, each as a subtest.
func runCases(t *testing.T, socket string, cases []socketCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := request{Socket: socket, Method: tc.method, Target: tc.target, Body: tc.body}
			var got response
			if tc.uid == 0 {
				got = do(t, req)
			} else {
				got = doAs(t, tc.uid, req)
			}
			if got.Status != tc.status || !strings.Contains(string(got.Body), tc.want) {
				t.Fatalf("%s %s = %d %s, want %d containing %s", tc.method, tc.target, got.Status, got.Body, tc.status, tc.want)
			}
		})
	}
}

// do sends req from this process (uid 0 in CI) on a fresh connection.
func do(t *testing.T, req request) response {
	t.Helper()
	r, err := send(req)
	if err != nil {
		t.Fatalf("%s %s on %s: %v", req.Method, req.Target, filepath.Base(req.Socket), err)
	}
	return r
}

func send(req request) (response, error) {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", req.Socket)
		},
		DisableKeepAlives: true,
	}, Timeout: 30 * time.Second}
	var body io.Reader
	if req.Body != "" {
		body = strings.NewReader(req.Body)
	}
	hr, err := http.NewRequest(req.Method, "http://warden.sock"+req.Target, body)
	if err != nil {
		return response{}, err
	}
	for k, v := range req.Header {
		hr.Header.Set(k, v)
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	if len(b) == 0 {
		b = []byte("null")
	}
	if !json.Valid(b) {
		b, _ = json.Marshal(string(b))
	}
	return response{Status: resp.StatusCode, Body: b}, nil
}

const helperEnv = "WARDEN_CONFORMANCE_HELPER"

// helperMain runs in the copy of the test binary started as another uid: it
// sends the request given as JSON in argv[1] and prints the response as JSON.
func helperMain() int {
	var req request
	if err := json.Unmarshal([]byte(os.Args[1]), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	r, err := send(req)
	if err != nil {
		r.Err = err.Error()
	}
	json.NewEncoder(os.Stdout).Encode(r)
	return 0
}

// doAs sends req from a process running as uid (group otherGID).
func doAs(t *testing.T, uid uint32, req request) response {
	t.Helper()
	needRoot(t)
	arg, _ := json.Marshal(req)
	cmd := exec.Command(filepath.Join(binDir, "conformance.test"), string(arg))
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: otherGID}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client as uid %d: %v", uid, err)
	}
	var r response
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("client as uid %d: %v: %s", uid, err, out)
	}
	if r.Err != "" {
		t.Fatalf("client as uid %d: %s", uid, r.Err)
	}
	return r
}

// post builds a JSON POST to broker.sock.
func (d *daemon) post(path string, body any, header map[string]string) request {
	b, _ := json.Marshal(body)
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range header {
		h[k] = v
	}
	return request{Socket: d.socket("broker"), Method: "POST", Target: path + "?api-version=2026-12-01", Header: h, Body: string(b)}
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// wardenctl runs the CLI and returns stdout, stderr and the exit code.
func wardenctl(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "wardenctl"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}
