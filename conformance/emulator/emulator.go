package emulator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Options configure an Emulator. The zero value is usable.
type Options struct {
	// Addr is the TCP address to listen on; default "127.0.0.1:0" (a free
	// port).
	Addr string
	// IDScope is the DPS ID scope the emulator answers for; default
	// "0ne00000001". Requests for another scope get 401.
	IDScope string
	// HubHostname is the IoT Hub host name DPS assigns devices to (the
	// registrationState's assignedHub) when an enrollment names none;
	// default "localhost:PORT", so a client can reach the hub at
	// https://{assignedHub}. SAS audiences may name a hub with or without
	// its port.
	HubHostname string
	// RetryAfter is the Retry-After (seconds) of DPS 202 replies; 0 sends
	// "Retry-After: 0" (benches).
	RetryAfter int
	// AssignAfterPolls keeps every registration "assigning" for this many
	// polls before it is assigned (deferred assignment); an enrollment's
	// own AssignAfterPolls, when set, wins.
	AssignAfterPolls int
	// Allocate, when set, decides each assignment (custom allocation): it
	// may change the device ID, the hub and the returned payload, or fail
	// the registration by returning an error.
	Allocate func(AllocationRequest) (Allocation, error)
	// TPMSameHubKey, when set, makes TPM assignments carry no new
	// tpm.authenticationKey: the hub then accepts tokens signed with the
	// DPS auth key. By default a fresh key is sent, as Azure does.
	TPMSameHubKey bool
	// ServerNames are extra DNS names or IPs for the server certificate
	// (localhost, 127.0.0.1 and ::1 are always included).
	ServerNames []string
	// Now is the clock for SAS expiry checks; default time.Now.
	Now func() time.Time
	// Logf, when set, receives one line per request.
	Logf func(format string, args ...any)
}

// Emulator is a DPS + IoT Hub emulator serving HTTPS on loopback with its
// own test CA. Create it with New, then Start; all methods are safe for
// concurrent use.
type Emulator struct {
	opts    Options
	caPEM   []byte
	tlsCfg  *tls.Config
	ln      net.Listener
	srv     *http.Server
	closed  chan struct{}
	once    sync.Once
	started sync.Once

	mu            sync.Mutex
	individual    map[string]*SymmetricEnrollment // by registration ID
	groups        []*GroupEnrollment
	x509s         []*x509Enrollment
	tpms          map[string]*TPMEnrollment // by registration ID
	registrations map[string]*registration  // by registration ID
	challenges    map[string]*tpmChallenge  // by registration ID
	devices       map[string]*device        // by hubKey(hub, deviceID)
	faults        []*Fault
	events        []Event
	messages      []Message
}

// New makes an emulator: a fresh test CA and server certificate, and a
// listener on opts.Addr (so URL is known before Start).
func New(opts Options) (*Emulator, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.IDScope == "" {
		opts.IDScope = "0ne00000001"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("emulator: listen on %s: %w", opts.Addr, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if opts.HubHostname == "" {
		opts.HubHostname = "localhost:" + strconv.Itoa(port)
	}
	caPEM, cert, err := makeCerts(opts.ServerNames)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("emulator: %w", err)
	}
	e := &Emulator{
		opts:          opts,
		caPEM:         caPEM,
		ln:            ln,
		closed:        make(chan struct{}),
		individual:    map[string]*SymmetricEnrollment{},
		tpms:          map[string]*TPMEnrollment{},
		registrations: map[string]*registration{},
		challenges:    map[string]*tpmChallenge{},
		devices:       map[string]*device{},
	}
	e.tlsCfg = &tls.Config{
		Certificates: []tls.Certificate{cert},
		// Client certificates are checked per request against the X.509
		// enrollments' CAs, not by the TLS layer.
		ClientAuth: tls.RequestClientCert,
		MinVersion: tls.VersionTLS12,
	}
	e.srv = &http.Server{Handler: e.handler(), ReadHeaderTimeout: 10 * time.Second}
	return e, nil
}

// Start serves HTTPS until ctx is done or Close is called. It returns at
// once; errors of the server after that are logged through Options.Logf.
// Calling it again only adds ctx as another way to stop.
func (e *Emulator) Start(ctx context.Context) error {
	select {
	case <-e.closed:
		return errors.New("emulator: closed")
	default:
	}
	e.started.Do(func() {
		go func() {
			err := e.srv.Serve(tls.NewListener(e.ln, e.tlsCfg))
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				e.logf("emulator: serve: %v", err)
			}
		}()
	})
	go func() {
		select {
		case <-ctx.Done():
			e.Close()
		case <-e.closed:
		}
	}()
	return nil
}

// Close stops the server and releases hanging requests.
func (e *Emulator) Close() error {
	var err error
	e.once.Do(func() {
		close(e.closed)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err = e.srv.Shutdown(ctx); err != nil {
			err = e.srv.Close()
		}
		e.ln.Close()
	})
	if err != nil {
		return fmt.Errorf("emulator: close: %w", err)
	}
	return nil
}

// URL is the base URL of both DPS and the hub: "https://localhost:PORT".
func (e *Emulator) URL() string { return "https://localhost:" + strconv.Itoa(e.Port()) }

// Port is the TCP port the emulator listens on.
func (e *Emulator) Port() int { return e.ln.Addr().(*net.TCPAddr).Port }

// IDScope is the DPS ID scope.
func (e *Emulator) IDScope() string { return e.opts.IDScope }

// HubHostname is the default hub's host name (assignedHub).
func (e *Emulator) HubHostname() string { return e.opts.HubHostname }

// CACertPEM is the PEM of the test CA that issued the server certificate.
func (e *Emulator) CACertPEM() []byte { return append([]byte(nil), e.caPEM...) }

// CertPool is a pool holding the test CA, for Go clients.
func (e *Emulator) CertPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(e.caPEM)
	return p
}

// Client returns an HTTP client trusting the test CA, presenting certs (if
// any) as TLS client certificates.
func (e *Emulator) Client(certs ...tls.Certificate) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: e.CertPool(), Certificates: certs, MinVersion: tls.VersionTLS12,
	}}, Timeout: 30 * time.Second}
}

func (e *Emulator) logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf(format, args...)
	}
}

// makeCerts makes a test CA and a server certificate for localhost,
// 127.0.0.1, ::1 and names.
func makeCerts(names []string) (caPEM []byte, server tls.Certificate, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, server, fmt.Errorf("CA key: %w", err)
	}
	now := time.Now()
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Warden emulator test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, server, fmt.Errorf("CA certificate: %w", err)
	}
	ca, _ = x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, server, fmt.Errorf("server key: %w", err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			leaf.IPAddresses = append(leaf.IPAddresses, ip)
		} else {
			leaf.DNSNames = append(leaf.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, server, fmt.Errorf("server certificate: %w", err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	server = tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
	return caPEM, server, nil
}
