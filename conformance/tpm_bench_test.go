package conformance

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/warden-iot/warden/client"
	"github.com/warden-iot/warden/conformance/emulator"
	"github.com/warden-iot/warden/tpm"
	"github.com/warden-iot/warden/tpm/swtpmtest"
)

// BenchmarkTPMSign measures T3, HMAC-SHA256 of a SAS string with the
// TPM-held auth key, on one swtpm (TCP): go-tpm's TPM2_HMAC sent directly
// on a raw connection, package tpm in-process, and tpmd.sock through an
// in-process wardend with 1 and 8 clients; it prints the ratios. The
// phases run one after another because swtpm serves one client at a time.
func BenchmarkTPMSign(b *testing.B) {
	sw := swtpmtest.Start(b, swtpmtest.Options{})
	ctx := context.Background()
	data := sasData(0)

	mech := tpm.New(tpm.Options{TCTI: sw.TCTI()})
	ek, srk, err := mech.Keys(ctx)
	if err != nil {
		b.Fatal(err)
	}
	a, err := emulator.NewTPMActivation(rand.Reader, ek, srk)
	if err != nil {
		b.Fatal(err)
	}
	if err := mech.ImportAuthKey(ctx, a.Blob); err != nil {
		b.Fatal(err)
	}
	want := a.Sign(data)
	check := func(mac []byte, err error) error {
		if err == nil && !bytes.Equal(mac, want) {
			err = errors.New("HMAC differs from the emulator's")
		}
		return err
	}

	rates := map[string]float64{}
	run := func(name string, clients int, f func() error) {
		b.Run(name, func(b *testing.B) {
			parallel(b, clients, f)
			rates[name] = float64(b.N) / b.Elapsed().Seconds()
			b.ReportMetric(rates[name], "req/s")
		})
	}

	run("package-tpm", 1, func() error { return check(mech.SignWithAuthKey(ctx, data)) })
	mech.Close()

	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(sw.Port)))
	if err != nil {
		b.Fatal(err)
	}
	direct := transport.FromReadWriteCloser(conn)
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm.DefaultAuthKeyHandle}.Execute(direct)
	if err != nil {
		b.Fatal(err)
	}
	key := tpm2.AuthHandle{Handle: tpm.DefaultAuthKeyHandle, Name: rp.Name, Auth: tpm2.PasswordAuth(nil)}
	run("go-tpm-direct", 1, func() error {
		rsp, err := tpm2.Hmac{Handle: key, Buffer: tpm2.TPM2BMaxBuffer{Buffer: data}, HashAlg: tpm2.TPMAlgSHA256}.Execute(direct)
		if err != nil {
			return err
		}
		return check(rsp.OutHMAC.Buffer, nil)
	})
	conn.Close()

	_, cfg := startBenchBroker(b, tpmConfig(sw, ""))
	sock := cfg.SocketPath("tpmd")
	for _, clients := range []int{1, 8} {
		cl := client.New(sock, "2020-09-01")
		run(fmt.Sprintf("tpmd-socket-%d", clients), clients, func() error {
			var out struct {
				Digest []byte `json:"digest"`
			}
			err := cl.Do(ctx, "POST", "/sign_with_auth_key", map[string][]byte{"data": data}, &out)
			return check(out.Digest, err)
		})
		cl.Close()
	}
	fmt.Printf("tpmd T3 (TPM2_HMAC of %d B on swtpm over TCP): go-tpm direct %.0f/s, package tpm %.0f/s, tpmd.sock %.0f/s (8 clients %.0f/s); socket/direct ratio %.2f, package/direct %.2f\n",
		len(data), rates["go-tpm-direct"], rates["package-tpm"], rates["tpmd-socket-1"], rates["tpmd-socket-8"],
		rates["tpmd-socket-1"]/rates["go-tpm-direct"], rates["package-tpm"]/rates["go-tpm-direct"])
}
