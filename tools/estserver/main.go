// Command estserver is the EST peer of Warden's tests: GlobalSign's EST
// server library (github.com/globalsign/est, pinned in tools/go.mod) in front
// of a small test CA, on loopback TLS.
//
// Unlike the library's own estserver binary, it enforces authentication by
// label (the optional path segment after /.well-known/est/):
//
//   - a label containing "basic" needs HTTP Basic -username / -password;
//   - a label containing "tls" needs a TLS client certificate issued by the
//     CA or by a -client-ca;
//   - a label containing "defer" answers 202 + Retry-After once per key;
//   - "triggererrors" behaves as the library's mock CA.
//
// Labels combine: "basic-tls" needs both. Certificates are issued for
// -lifetime. The CA (ca.pem, ca.key) is created in -dir, or reused from it, so
// a restarted server issues from the same CA. Once listening, the server
// writes its address to -addr-file (atomically). SIGTERM stops it.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/globalsign/est"
)

func main() {
	var (
		addr       = flag.String("addr", "127.0.0.1:0", "listen address (loopback; port 0 picks a free one)")
		addrFile   = flag.String("addr-file", "", "write the bound address here once listening")
		dir        = flag.String("dir", ".", "directory of ca.pem and ca.key (created when missing)")
		username   = flag.String("username", "estuser", "HTTP Basic user for labels containing \"basic\"")
		password   = flag.String("password", "estpwd", "HTTP Basic password for labels containing \"basic\"")
		clientCA   = flag.String("client-ca", "", "comma-separated PEM files of extra client (bootstrap) CAs")
		lifetime   = flag.Duration("lifetime", 90*24*time.Hour, "lifetime of issued certificates")
		retryAfter = flag.Int("retry-after", 1, "Retry-After seconds of deferred (202) answers")
	)
	flag.Parse()
	log.SetPrefix("estserver: ")
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(*addr, *addrFile, *dir, *username, *password, *clientCA, *lifetime, *retryAfter); err != nil {
		log.Fatal(err)
	}
}

func run(addr, addrFile, dir, username, password, clientCA string, lifetime time.Duration, retryAfter int) error {
	caCert, caKey, err := loadOrCreateCA(dir)
	if err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	ca := &testCA{cert: caCert, key: caKey, lifetime: lifetime, retryAfter: retryAfter, deferred: map[[32]byte]bool{}}
	tlsCert, err := serverCert(ca)
	if err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, f := range strings.Split(clientCA, ",") {
		if f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return fmt.Errorf("client CA %s: no certificate", f)
		}
	}
	checkBasic := func(_ context.Context, r *http.Request, aps, user, pass string) error {
		if !strings.Contains(aps, "basic") {
			return nil
		}
		if subtle.ConstantTimeCompare([]byte(user), []byte(username)) == 1 &&
			subtle.ConstantTimeCompare([]byte(pass), []byte(password)) == 1 {
			return nil
		}
		return errors.New("wrong or missing HTTP Basic credentials")
	}
	router, err := est.NewRouter(&est.ServerConfig{
		CA:             ca,
		Logger:         stdLogger{},
		Timeout:        30 * time.Second,
		CheckBasicAuth: checkBasic,
	})
	if err != nil {
		return fmt.Errorf("EST router: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           router,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			ClientAuth:   tls.VerifyClientCertIfGiven,
			ClientCAs:    pool,
			Certificates: []tls.Certificate{tlsCert},
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	if addrFile != "" {
		tmp := addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, addrFile); err != nil {
			return err
		}
	}
	log.Printf("listening on %s (lifetime %s)", ln.Addr(), lifetime)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-stop:
		log.Printf("stopping on %v", s)
		return srv.Close()
	case err := <-errc:
		return err
	}
}

// serverCert issues the TLS server certificate for localhost and loopback.
func serverCert(ca *testCA) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "Warden test EST server"},
	}, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	saved := ca.lifetime
	ca.lifetime = 10 * 365 * 24 * time.Hour
	cert, err := ca.issue(csr, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []string{"localhost"}, []string{"127.0.0.1", "::1"})
	ca.lifetime = saved
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw, ca.cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func parseIP(s string) net.IP { return net.ParseIP(s) }

// stdLogger is est.Logger over the standard logger; its methods implement
// that interface.
type stdLogger struct{}

func (stdLogger) Errorf(format string, args ...interface{}) { log.Printf("ERROR "+format, args...) }
func (stdLogger) Errorw(msg string, kv ...interface{}) {
	log.Println(append([]any{"ERROR", msg}, kv...)...)
}
func (stdLogger) Infof(format string, args ...interface{}) { log.Printf(format, args...) }
func (stdLogger) Infow(msg string, kv ...interface{})      { log.Println(append([]any{msg}, kv...)...) }
func (l stdLogger) With(...interface{}) est.Logger         { return l }
