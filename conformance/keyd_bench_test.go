package conformance

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/warden-iot/warden/client/keyd"
)

// benchBroker serves wardend in this process (real sockets) with extra
// config and returns its keyd socket.
func benchBroker(b *testing.B, extra string) string {
	_, cfg := startBenchBroker(b, extra)
	return cfg.SocketPath("keyd")
}

// printRatio prints format with a, b and a/b when both sub-benchmarks ran.
func printRatio(format string, a, b float64) {
	if a > 0 && b > 0 {
		fmt.Printf(format, a, b, a/b)
	}
}

// figure is one sub-benchmark's result: operations per second, and the
// cores this whole process (clients, server, GC) kept busy meanwhile. The
// two together say whether a rate is bound by CPU or by waiting.
type figure struct{ rate, cores float64 }

// cpuPerOp is the process CPU time one operation cost.
func (f figure) cpuPerOp() time.Duration {
	if f.rate == 0 {
		return 0
	}
	return time.Duration(f.cores / f.rate * float64(time.Second))
}

// processCPU is the user and system time this process has used, plus
// that of the processes pids (read from /proc, in clock ticks of 10 ms,
// which over a run of seconds is precise enough).
func processCPU(pids ...int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) start after its ')':
		// utime and stime are the 12th and 13th of them.
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(u+st) * 10 * time.Millisecond
		}
	}
	return total
}

// rateRun runs f as sub-benchmark name and returns its figure; the cores
// busy count this process and the processes pids.
func rateRun(b *testing.B, name string, f func(b *testing.B), pids ...int) figure {
	var fig figure
	b.Run(name, func(b *testing.B) {
		cpu0, t0 := processCPU(pids...), time.Now()
		f(b)
		cpu, wall := processCPU(pids...)-cpu0, time.Since(t0)
		fig = figure{rate: float64(b.N) / b.Elapsed().Seconds(), cores: cpu.Seconds() / wall.Seconds()}
		b.ReportMetric(fig.rate, "ops/s")
		b.ReportMetric(fig.cores, "cores")
	})
	return fig
}

// printCPU prints what the process's cores did in a pair of runs: how many
// were busy, the CPU one operation cost on each side, and the ratio of those
// costs — the throughput ratio a machine that never waits would show.
func printCPU(label string, a, b figure) {
	if a.rate > 0 && b.rate > 0 {
		fmt.Printf("  %s: cores busy %.2f vs %.2f, CPU per op %.1fµs vs %.1fµs, CPU-cost ratio %.3f\n",
			label, a.cores, b.cores, a.cpuPerOp().Seconds()*1e6, b.cpuPerOp().Seconds()*1e6, b.cpuPerOp().Seconds()/a.cpuPerOp().Seconds())
	}
}

// BenchmarkKeydSign: ECDSA P-256 and HMAC-SHA256 signatures through
// keyd.sock (file store, keep-alive client, default policy) with 1 and 8
// clients, beside Go's crypto in-process, with the ratio printed.
func BenchmarkKeydSign(b *testing.B) { benchKeydSign(b, "", "") }

// BenchmarkKeydSignDecisionLog is BenchmarkKeydSign with a decision log,
// which turns keyd's decision reuse off: every signature is a policy
// evaluation and a log line.
func BenchmarkKeydSignDecisionLog(b *testing.B) {
	benchKeydSign(b, fmt.Sprintf("[warden.policy]\ndecision_log = %q\n", filepath.Join(b.TempDir(), "decisions.log")), ", every decision logged")
}

func benchKeydSign(b *testing.B, extra, label string) {
	sock := benchBroker(b, extra)
	ctx := context.Background()
	setup := keyd.New(sock)
	ecHandle, err := setup.CreateKeyPairIfNotExists(ctx, "bench-ec", "ec-p256")
	if err != nil {
		b.Fatal(err)
	}
	macKey := make([]byte, 32)
	rand.Read(macKey)
	macHandle, err := setup.ImportKey(ctx, "bench-mac", macKey, "sign")
	if err != nil {
		b.Fatal(err)
	}
	setup.Close()
	goKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("benchmark"))
	msg := []byte("SharedAccessSignature sr=myhub.azure-devices.net%2fdevices%2fdevice-1&se=1790000000")

	for _, clients := range []int{1, 8} {
		for _, op := range []struct {
			name   string
			socket func(c *keyd.Client) error
			inproc func() error
		}{
			{"ecdsa-p256", func(c *keyd.Client) error {
				_, err := c.Sign(ctx, ecHandle, keyd.ECDSA, digest[:])
				return err
			}, func() error {
				_, err := ecdsa.SignASN1(rand.Reader, goKey, digest[:])
				return err
			}},
			{"hmac-sha256", func(c *keyd.Client) error {
				_, err := c.Sign(ctx, macHandle, keyd.HMACSHA256, msg)
				return err
			}, func() error {
				m := hmac.New(sha256.New, macKey)
				m.Write(msg)
				m.Sum(nil)
				return nil
			}},
		} {
			// The target's figure (ECDSA, 8 clients) is the median of three
			// alternating pairs: one pair moves with the machine's noise.
			rounds := 1
			if op.name == "ecdsa-p256" && clients == 8 {
				rounds = 3
			}
			var ratios []float64
			for round := range rounds {
				name := fmt.Sprintf("%s/clients=%d", op.name, clients)
				if rounds > 1 {
					name += fmt.Sprintf("/round=%d", round+1)
				}
				viaSock := rateRun(b, name+"/socket", func(b *testing.B) {
					c := keyd.New(sock)
					defer c.Close()
					parallel(b, clients, func() error { return op.socket(c) })
				})
				inProc := rateRun(b, name+"/inprocess", func(b *testing.B) {
					parallel(b, clients, op.inproc)
				})
				printRatio(fmt.Sprintf("keyd.sock %s sign%s, %d client(s): socket %%.0f/s, in-process Go %%.0f/s, ratio %%.3f\n", op.name, label, clients), viaSock.rate, inProc.rate)
				if op.name == "ecdsa-p256" {
					printCPU("socket vs in-process", viaSock, inProc)
				}
				if viaSock.rate > 0 && inProc.rate > 0 {
					ratios = append(ratios, viaSock.rate/inProc.rate)
				}
			}
			if rounds > 1 && len(ratios) == rounds {
				slices.Sort(ratios)
				fmt.Printf("keyd.sock %s sign%s, %d clients: median ratio of %d rounds %.3f (%.3f–%.3f)\n", op.name, label, clients, rounds, ratios[rounds/2], ratios[0], ratios[rounds-1])
			}
		}
	}
}

// BenchmarkKeydSignDaemon is BenchmarkKeydSign's ECDSA figure at 8 clients
// with wardend as its own process, as deployed: two Go runtimes then share
// the machine's cores, and every request wakes a thread of the other one.
func BenchmarkKeydSignDaemon(b *testing.B) {
	dir := b.TempDir()
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[warden]\nstate_dir = %q\nsocket_dir = %q\n", filepath.Join(dir, "state"), filepath.Join(dir, "run"))), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "wardend"), "-c", cfg)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	sock := filepath.Join(dir, "run", "keyd.sock")
	ctx := context.Background()
	var h string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c := keyd.New(sock)
		var err error
		h, err = c.CreateKeyPairIfNotExists(ctx, "bench-ec", "ec-p256")
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("wardend not ready: %v", err)
		}
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	digest := sha256.Sum256([]byte("benchmark"))
	viaSock := rateRun(b, "socket", func(b *testing.B) {
		c := keyd.New(sock)
		defer c.Close()
		parallel(b, 8, func() error {
			_, err := c.Sign(ctx, h, keyd.ECDSA, digest[:])
			return err
		})
	}, cmd.Process.Pid)
	inProc := rateRun(b, "inprocess", func(b *testing.B) {
		parallel(b, 8, func() error {
			_, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
			return err
		})
	})
	printRatio("keyd.sock ecdsa-p256 sign, wardend as its own process, 8 clients: socket %.0f/s, in-process Go %.0f/s, ratio %.3f\n", viaSock.rate, inProc.rate)
	printCPU("socket (both processes) vs in-process", viaSock, inProc)
}

// BenchmarkKeydSoftHSMSign: ECDSA P-256 signatures by a SoftHSM2 key,
// through keyd.sock beside SoftHSM called directly (miekg/pkcs11, one
// logged-in session per goroutine), with the ratio printed.
func BenchmarkKeydSoftHSMSign(b *testing.B) {
	hsm := newSoftHSM(b)
	os.Setenv("SOFTHSM2_CONF", hsm.conf) // read once, at C_Initialize, by both paths
	sock := benchBroker(b, hsm.config())
	ctx := context.Background()
	setup := keyd.New(sock)
	h, err := setup.CreateKeyPairIfNotExists(ctx, "bench-hsm-ec", "ec-p256")
	setup.Close()
	if err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("benchmark"))

	p := pkcs11.New(softhsmLib)
	if err := p.Initialize(); err != nil && err != pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		b.Fatal(err)
	}
	slot := softhsmSlot(b, p, hsm.label)
	for _, clients := range []int{1, 8} {
		viaSock := rateRun(b, fmt.Sprintf("clients=%d/socket", clients), func(b *testing.B) {
			c := keyd.New(sock)
			defer c.Close()
			parallel(b, clients, func() error {
				_, err := c.Sign(ctx, h, keyd.ECDSA, digest[:])
				return err
			})
		})
		direct := rateRun(b, fmt.Sprintf("clients=%d/softhsm-direct", clients), func(b *testing.B) {
			sessions := make(chan pkcs11.SessionHandle, clients)
			var key pkcs11.ObjectHandle
			for range clients {
				s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
				if err != nil {
					b.Fatal(err)
				}
				defer p.CloseSession(s)
				if err := p.Login(s, pkcs11.CKU_USER, hsm.pin); err != nil && err != pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
					b.Fatal(err)
				}
				key = findKey(b, p, s, "bench-hsm-ec")
				sessions <- s
			}
			mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
			parallel(b, clients, func() error {
				s := <-sessions
				defer func() { sessions <- s }()
				if err := p.SignInit(s, mech, key); err != nil {
					return err
				}
				_, err := p.Sign(s, digest[:])
				return err
			})
		})
		printRatio(fmt.Sprintf("SoftHSM ECDSA P-256 sign, %d client(s): through keyd.sock %%.0f/s, SoftHSM direct %%.0f/s, ratio %%.3f\n", clients), viaSock.rate, direct.rate)
	}
}

func softhsmSlot(b *testing.B, p *pkcs11.Ctx, label string) uint {
	slots, err := p.GetSlotList(true)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range slots {
		if ti, err := p.GetTokenInfo(s); err == nil && ti.Label == label {
			return s
		}
	}
	b.Fatalf("no SoftHSM token %q", label)
	return 0
}

func findKey(b *testing.B, p *pkcs11.Ctx, s pkcs11.SessionHandle, label string) pkcs11.ObjectHandle {
	if err := p.FindObjectsInit(s, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	}); err != nil {
		b.Fatal(err)
	}
	hs, _, err := p.FindObjects(s, 1)
	p.FindObjectsFinal(s)
	if err != nil || len(hs) != 1 {
		b.Fatalf("find %s: %v", label, err)
	}
	return hs[0]
}
