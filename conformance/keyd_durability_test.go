package conformance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warden-iot/warden/client"
	"github.com/warden-iot/warden/client/keyd"
	"github.com/warden-iot/warden/internal/syncbuf"
)

// TestKeydRestart: keys and the handles issued for them survive a restart:
// the same handle strings sign after it, with the same keys.
func TestKeydRestart(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b keydBackend) {
		k := startKeyd(t, b, "")
		ctx := context.Background()
		c := keyd.New(k.recordingSocket())
		defer c.Close()
		kp, err := c.CreateKeyPairIfNotExists(ctx, "persist-ec", "ec-p256")
		if err != nil {
			t.Fatal(err)
		}
		key, err := c.CreateKey(ctx, "persist-key", "derive,sign")
		if err != nil {
			t.Fatal(err)
		}
		derived, err := c.DeriveKey(ctx, key, []byte("d"))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := c.PublicKey(ctx, kp)
		if err != nil {
			t.Fatal(err)
		}
		mac, _ := c.Sign(ctx, key, keyd.HMACSHA256, []byte("m"))
		dmac, _ := c.Sign(ctx, derived, keyd.HMACSHA256, []byte("m"))

		c.Close()
		k.d.restart()

		c2 := keyd.New(k.recordingSocket())
		defer c2.Close()
		digest := sha256.Sum256([]byte("after restart"))
		sig, err := c2.Sign(ctx, kp, keyd.ECDSA, digest[:])
		if err != nil {
			t.Fatalf("the key-pair handle issued before the restart: %v", err)
		}
		if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), digest[:], sig) {
			t.Fatal("the key pair changed across the restart")
		}
		if got, err := c2.Sign(ctx, key, keyd.HMACSHA256, []byte("m")); err != nil || !bytes.Equal(got, mac) {
			t.Fatalf("the symmetric key or its handle did not survive: %v", err)
		}
		if got, err := c2.Sign(ctx, derived, keyd.HMACSHA256, []byte("m")); err != nil || !bytes.Equal(got, dmac) {
			t.Fatalf("the derived handle did not survive: %v", err)
		}
	})
}

// TestKeydSoftHSMNonExtractable: a key pair and a key keyd creates on the
// token are sensitive and never extractable, and no key file is written.
func TestKeydSoftHSMNonExtractable(t *testing.T) {
	var b keydBackend
	for _, kb := range keydBackends {
		if kb.name == "softhsm" {
			b = kb
		}
	}
	k := startKeyd(t, b, "")
	k.handle(k.call("POST", "/keypair", map[string]any{"keyId": "hsm-ec", "preferredAlgorithms": "ec-p256"}))
	k.handle(k.call("POST", "/keypair", map[string]any{"keyId": "hsm-rsa", "preferredAlgorithms": "rsa-2048"}))
	k.handle(k.call("POST", "/key", map[string]any{"keyId": "hsm-mac", "usage": "derive,sign"}))
	k.handle(k.call("POST", "/key", map[string]any{"keyId": "hsm-aes", "usage": "encrypt"}))
	out := k.hsm.tool(t, "--list-objects")
	objects := strings.Split(out, "\n")
	found := map[string]bool{}
	var kind, label string
	for _, line := range objects {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasSuffix(strings.Split(line, ";")[0], "Object"):
			kind, label = strings.Split(line, ";")[0], ""
		case strings.HasPrefix(line, "label:"):
			label = strings.TrimSpace(strings.TrimPrefix(line, "label:"))
		case strings.HasPrefix(line, "Access:") && strings.HasPrefix(label, "hsm-") && kind != "Public Key Object":
			access := strings.TrimPrefix(line, "Access:")
			if !strings.Contains(access, "sensitive") || !strings.Contains(access, "never extractable") {
				t.Errorf("%s %s is not sensitive and never extractable: %s", kind, label, access)
			}
			found[kind+" "+label] = true
		}
	}
	for _, want := range []string{"Private Key Object hsm-ec", "Private Key Object hsm-rsa", "Secret Key Object hsm-mac", "Secret Key Object hsm-aes"} {
		if !found[want] {
			t.Errorf("%s not on the token:\n%s", want, out)
		}
	}
	files, _ := filepath.Glob(filepath.Join(k.d.dir, "state", "keys", "hsm*"))
	if len(files) != 0 {
		t.Errorf("token keys were also written to files: %v", files)
	}
}

// keyFileName matches aziot's key file names: <alnum>-<sha256 hex>.key.
var keyFileName = regexp.MustCompile(`^[A-Za-z0-9]*-[0-9a-f]{64}\.key$`)

// TestKeydKillDuringCreation: 100 rounds of starting wardend, firing key
// creations (symmetric keys and key pairs) and SIGKILLing it at a random
// moment. After each kill every key file under the state directory is
// either absent or complete and parseable: never truncated.
func TestKeydKillDuringCreation(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 10
	}
	d := startDaemon(t, "")
	d.stop()
	keysDir := filepath.Join(d.dir, "state", "keys")
	var created, checks int
	for round := range rounds {
		d.startFast()
		c := client.New(d.socket("keyd"), keydVersion)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 4 {
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					id := fmt.Sprintf("r%d-w%d-%d", round, w, i)
					var err error
					if i%2 == 0 {
						err = c.Do(ctx, "POST", "/keypair", map[string]any{"keyId": "kp-" + id}, nil)
					} else {
						err = c.Do(ctx, "POST", "/key", map[string]any{"keyId": "sym-" + id, "usage": "sign"}, nil)
					}
					if err == nil {
						mu.Lock()
						created++
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(time.Duration(rand.IntN(30_000)) * time.Microsecond)
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
		cancel()
		wg.Wait()
		c.Close()

		entries, err := os.ReadDir(keysDir)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !keyFileName.MatchString(e.Name()) {
				continue // an atomic write's temp file, never a key file
			}
			checks++
			if err := checkKeyFile(filepath.Join(keysDir, e.Name())); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
	}
	entries, _ := os.ReadDir(keysDir)
	temps := 0
	for _, e := range entries {
		if !keyFileName.MatchString(e.Name()) {
			temps++
		}
	}
	t.Logf("%d rounds: %d creations answered, %d key files at the end (%d checks after SIGKILLs), %d temp files left behind",
		rounds, created, len(entries)-temps, checks, temps)
}

// checkKeyFile: a key pair file is a parseable PEM private key; a symmetric
// key file is 32 bytes (keyd generates 32-byte keys; none are imported here).
func checkKeyFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if block, _ := pem.Decode(data); block != nil {
		if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
			return fmt.Errorf("%s: PEM key that does not parse: %w", path, err)
		}
		return nil
	}
	if bytes.HasPrefix(data, []byte("-----")) || len(data) != 32 {
		return fmt.Errorf("%s: torn key file of %d bytes", path, len(data))
	}
	return nil
}

// startFast starts the daemon again and waits only until keyd.sock answers.
func (d *daemon) startFast() {
	d.t.Helper()
	d.stderr = &syncbuf.Buffer{}
	d.cmd = exec.Command(filepath.Join(binDir, "wardend"), "-c", d.cfgPath)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func() { d.cmd.Wait(); close(d.exited) }()
	c := client.New(d.socket("keyd"), keydVersion)
	defer c.Close()
	for deadline := time.Now().Add(30 * time.Second); ; {
		err := c.Do(context.Background(), "GET", "/key/ready-probe", nil, nil)
		if ce, ok := err.(*client.Error); ok && ce.Status == 400 {
			return // keyd answers (the probe key does not exist)
		}
		select {
		case <-d.exited:
			d.t.Fatalf("wardend exited during start-up: %s", d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("keyd not ready after 30s: %v\n%s", err, d.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
