package host

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io/fs"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/warden-iot/warden/hsm"
	"github.com/warden-iot/warden/wasm-modules/guest"
)

// mapErr turns a key store, cert store or TPM error into the module's error.
func mapErr(op string, err error) *guest.Error {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return ctxError(err)
	case errors.Is(err, hsm.ErrNotFound), errors.Is(err, ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return guest.Errorf(guest.CodeNotFound, "%s: %v", op, err)
	case errors.Is(err, hsm.ErrInvalidParameter), errors.Is(err, hsm.ErrUnsupported):
		return guest.Errorf(guest.CodeInvalid, "%s: %v", op, err)
	}
	return guest.Errorf(guest.CodeFailed, "%s: %v", op, err)
}

// bounded runs fn, a key store, cert store or TPM operation, and returns
// when it does or when ctx is done, whichever comes first: a backend that
// hangs (a PKCS#11 token, a TPM on a dead link) cannot hold a job past its
// deadline. An abandoned fn finishes in the background; its result is
// dropped. A panic in fn is its error: in this goroutine nothing else would
// recover it, and a module's request would end the broker.
func bounded[T any](ctx context.Context, log *slog.Logger, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				log.Error("a host call's store operation panicked", "panic", p, "stack", string(debug.Stack()))
				done <- result{err: errPanic}
			}
		}()
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// errPanic marks a store operation that panicked (a bug, reported as a
// failure of the call rather than a crash).
var errPanic = errors.New("the operation failed unexpectedly")

func unavailable(op, what string) *guest.Error {
	return guest.Errorf(guest.CodeUnavailable, "%s: this host has no %s", op, what)
}

func (j *job) keysSign(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpKeysSign
	var r guest.SignRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.KeyID == "" || len(r.Digest) == 0 {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: key_id and digest are required", op)
	}
	hash, err := guest.ParseHashName(r.Hash)
	if err != nil {
		return nil, guest.AsError(err)
	}
	if e := j.keyAccess(ctx, op, r.KeyID, map[string]any{"hash": r.Hash, "pss": r.PSS}); e != nil {
		return nil, e
	}
	var opts crypto.SignerOpts = hash
	if r.PSS {
		opts = &rsa.PSSOptions{Hash: hash, SaltLength: r.SaltLength}
	}
	sig, err := bounded(ctx, j.log, func() ([]byte, error) {
		s, err := j.h.opts.Keys.Signer(ctx, r.KeyID)
		if err != nil {
			return nil, err
		}
		return s.Sign(rand.Reader, r.Digest, opts)
	})
	if err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.SignResponse{Signature: sig})
}

// keyAccess is what every keys.* call checks before it touches the store:
// that there is one, and that the policy lets the module use key id.
func (j *job) keyAccess(ctx context.Context, op, id string, details map[string]any) *guest.Error {
	if j.h.opts.Keys == nil {
		return unavailable(op, "key store")
	}
	return j.authorize(ctx, op, "key:"+id, details)
}

func (j *job) publicKey(ctx context.Context, op, id string) ([]byte, *guest.Error) {
	pub, err := bounded(ctx, j.log, func() (crypto.PublicKey, error) { return j.h.opts.Keys.PublicKey(ctx, id) })
	if err != nil {
		return nil, mapErr(op, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.PublicKeyResponse{PublicKey: der})
}

func (j *job) keysPublic(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpKeysPublic
	var r guest.KeyRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.KeyID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: key_id is required", op)
	}
	if e := j.keyAccess(ctx, op, r.KeyID, nil); e != nil {
		return nil, e
	}
	return j.publicKey(ctx, op, r.KeyID)
}

// keysHMAC computes HMAC-SHA256 with a symmetric key of the key store; the
// key stays there.
func (j *job) keysHMAC(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpKeysHMAC
	var r guest.HMACRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.KeyID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: key_id is required", op)
	}
	if e := j.keyAccess(ctx, op, r.KeyID, map[string]any{"algorithm": "HMAC-SHA256"}); e != nil {
		return nil, e
	}
	sig, err := bounded(ctx, j.log, func() ([]byte, error) { return j.h.opts.Keys.HMACSHA256(ctx, r.KeyID, r.Message) })
	if err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.HMACResponse{Signature: sig})
}

func (j *job) keysCreateKeyPair(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpKeysCreateKeyPair
	var r guest.CreateKeyPairRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.KeyID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: key_id is required", op)
	}
	if len(r.Algorithms) == 0 {
		r.Algorithms = []string{string(hsm.ECP256)}
	}
	algs := make([]hsm.Algorithm, len(r.Algorithms))
	details := make([]any, len(r.Algorithms))
	for i, a := range r.Algorithms {
		switch hsm.Algorithm(a) {
		case hsm.ECP256, hsm.RSA2048, hsm.RSA4096:
		default:
			return nil, guest.Errorf(guest.CodeInvalid, "%s: unknown algorithm %q (ec-p256, rsa-2048, rsa-4096)", op, a)
		}
		algs[i], details[i] = hsm.Algorithm(a), a
	}
	if e := j.keyAccess(ctx, op, r.KeyID, map[string]any{"algorithms": details}); e != nil {
		return nil, e
	}
	if _, err := bounded(ctx, j.log, func() (any, error) { return nil, j.h.opts.Keys.CreateKeyPair(ctx, r.KeyID, algs) }); err != nil {
		return nil, mapErr(op, err)
	}
	return j.publicKey(ctx, op, r.KeyID)
}

func (j *job) certsGet(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpCertsGet
	var r guest.CertRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.CertID == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: cert_id is required", op)
	}
	pem, e := j.getCert(ctx, op, r.CertID, nil)
	if e != nil {
		return nil, e
	}
	return encode(op, guest.CertResponse{PEM: string(pem)})
}

// getCert authorizes certs.get on id and reads it (also for http.do's TLS).
func (j *job) getCert(ctx context.Context, op, id string, details map[string]any) ([]byte, *guest.Error) {
	if j.h.opts.Certs == nil {
		return nil, unavailable(op, "certificate store")
	}
	if e := j.authorize(ctx, guest.OpCertsGet, "cert:"+id, details); e != nil {
		return nil, e
	}
	pem, err := bounded(ctx, j.log, func() ([]byte, error) { return j.h.opts.Certs.Get(ctx, id) })
	if err != nil {
		return nil, mapErr(op, err)
	}
	return pem, nil
}

func (j *job) certsPut(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpCertsPut
	var r guest.CertPutRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.CertID == "" || r.PEM == "" {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: cert_id and pem are required", op)
	}
	if j.h.opts.Certs == nil {
		return nil, unavailable(op, "certificate store")
	}
	if e := j.authorize(ctx, op, "cert:"+r.CertID, nil); e != nil {
		return nil, e
	}
	if _, err := bounded(ctx, j.log, func() (any, error) { return nil, j.h.opts.Certs.Put(ctx, r.CertID, []byte(r.PEM)) }); err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.Empty{})
}

func (j *job) tpmKeys(ctx context.Context, _ []byte) ([]byte, *guest.Error) {
	const op = guest.OpTPMKeys
	if j.h.opts.TPM == nil {
		return nil, unavailable(op, "TPM")
	}
	if e := j.authorize(ctx, op, "tpm:keys", nil); e != nil {
		return nil, e
	}
	keys, err := bounded(ctx, j.log, func() (guest.TPMKeysResponse, error) {
		ek, srk, err := j.h.opts.TPM.Keys(ctx)
		return guest.TPMKeysResponse{EndorsementKey: ek, StorageRootKey: srk}, err
	})
	if err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, keys)
}

func (j *job) tpmImportAuthKey(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpTPMImportAuthKey
	var r guest.TPMImportRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if len(r.Key) == 0 {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: key is required", op)
	}
	if j.h.opts.TPM == nil {
		return nil, unavailable(op, "TPM")
	}
	if e := j.authorize(ctx, op, "tpm:authkey", nil); e != nil {
		return nil, e
	}
	if _, err := bounded(ctx, j.log, func() (any, error) { return nil, j.h.opts.TPM.ImportAuthKey(ctx, r.Key) }); err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.Empty{})
}

func (j *job) tpmSign(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpTPMSign
	var r guest.TPMSignRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if j.h.opts.TPM == nil {
		return nil, unavailable(op, "TPM")
	}
	if e := j.authorize(ctx, op, "tpm:authkey", nil); e != nil {
		return nil, e
	}
	d, err := bounded(ctx, j.log, func() ([]byte, error) { return j.h.opts.TPM.SignWithAuthKey(ctx, r.Data) })
	if err != nil {
		return nil, mapErr(op, err)
	}
	return encode(op, guest.TPMSignResponse{Digest: d})
}

// clockSleep sleeps, refusing up front a sleep longer than MaxSleep or one
// that would end after the job's deadline, and waking when ctx is done.
func (j *job) clockSleep(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpClockSleep
	var r guest.SleepRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	if r.Milliseconds <= 0 {
		return encode(op, guest.Empty{})
	}
	// Compared in milliseconds: a module's huge ms would overflow the
	// time.Duration, wrapping to a short or negative sleep that passes.
	if r.Milliseconds > j.m.limits.MaxSleep.Milliseconds() {
		return nil, guest.Errorf(guest.CodeInvalid, "%s: %d ms is longer than the host's longest sleep, %v", op, r.Milliseconds, j.m.limits.MaxSleep)
	}
	d := time.Duration(r.Milliseconds) * time.Millisecond
	if time.Now().Add(d).After(j.deadline) {
		return nil, guest.Errorf(guest.CodeDeadline, "%s: %v would outlast the job's deadline (%v left)", op, d, time.Until(j.deadline).Round(time.Millisecond))
	}
	if e := j.authorize(ctx, op, "clock", map[string]any{"ms": r.Milliseconds}); e != nil {
		return nil, e
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return encode(op, guest.Empty{})
	case <-ctx.Done():
		return nil, ctxError(ctx.Err())
	}
}

// logLine writes a module's log line. log is the one host call that is not
// a policy decision: like standard error, it only reaches Warden's log,
// capped per job.
func (j *job) logLine(ctx context.Context, req []byte) ([]byte, *guest.Error) {
	const op = guest.OpLog
	var r guest.LogRequest
	if e := decode(op, req, &r); e != nil {
		return nil, e
	}
	attrs := make([]any, 0, len(r.Attrs))
	for k, v := range r.Attrs {
		attrs = append(attrs, slog.Any(k, v))
	}
	if len(attrs) > 0 {
		j.emit(ctx, guest.ParseLevel(r.Level), r.Msg, slog.Group("attrs", attrs...))
	} else {
		j.emit(ctx, guest.ParseLevel(r.Level), r.Msg)
	}
	return encode(op, guest.Empty{})
}
