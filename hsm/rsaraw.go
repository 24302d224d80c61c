package hsm

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"math/big"
)

// rsaCRT is an RSA private key prepared for the raw private operation
// (aziot's RSA-NO-PADDING: RSA_private_encrypt with RSA_NO_PADDING, the
// primitive the openssl engine pads for PSS).
//
// The Go standard library has no public API for the unpadded private
// operation (its constant-time implementation is internal), so this is the
// construction crypto/rsa itself used up to Go 1.19, hardened:
//
//   - base blinding: the input is multiplied by r^e for a fresh random r and
//     the result by r⁻¹, so the exponentiation never sees the caller's value;
//   - exponent blinding: each CRT exponent gets a fresh random multiple of
//     p−1 (q−1) added, so timing that math/big's non-constant-time Exp may
//     leak differs on every call and does not accumulate on d;
//   - a fault check: the result is verified with the public exponent before
//     it is returned (a faulty CRT half would otherwise leak a factor of n).
//
// PKCS#11 keys do this operation in the token (CKM_RSA_X509) instead.
type rsaCRT struct {
	n, e *big.Int
	size int // modulus length in bytes

	// Two-prime keys (all keys aziot and Warden generate): CRT.
	p, q, dp, dq, qinv, pm1, qm1 *big.Int
	// Multi-prime keys (deprecated, only if preloaded): d and φ(n).
	d, phi *big.Int
}

func newRSACRT(k *rsa.PrivateKey) *rsaCRT {
	c := &rsaCRT{n: k.N, e: big.NewInt(int64(k.E)), size: k.Size()}
	one := big.NewInt(1)
	if len(k.Primes) == 2 {
		p, q := k.Primes[0], k.Primes[1]
		c.p, c.q = p, q
		c.pm1 = new(big.Int).Sub(p, one)
		c.qm1 = new(big.Int).Sub(q, one)
		c.dp = new(big.Int).Mod(k.D, c.pm1)
		c.dq = new(big.Int).Mod(k.D, c.qm1)
		c.qinv = new(big.Int).ModInverse(q, p)
		if c.qinv != nil {
			return c
		}
		c.p, c.q = nil, nil // not coprime: an invalid key; use d below
	}
	c.d = k.D
	c.phi = big.NewInt(1)
	for _, p := range k.Primes {
		c.phi.Mul(c.phi, new(big.Int).Sub(p, one))
	}
	return c
}

// private returns data^d mod n as a modulus-length big-endian string. data
// must be exactly modulus-length and, as a number, less than n.
func (c *rsaCRT) private(random io.Reader, data []byte) ([]byte, error) {
	if len(data) != c.size {
		return nil, fmt.Errorf("%w: RSA without padding needs exactly %d bytes (the modulus length), got %d",
			ErrInvalidParameter, c.size, len(data))
	}
	m := new(big.Int).SetBytes(data)
	if m.Cmp(c.n) >= 0 {
		return nil, fmt.Errorf("%w: RSA without padding: the input is not less than the modulus", ErrInvalidParameter)
	}
	r, rInv, err := c.blinder(random)
	if err != nil {
		return nil, err
	}
	// Blind: mb = m · r^e mod n.
	mb := new(big.Int).Exp(r, c.e, c.n)
	mb.Mul(mb, m).Mod(mb, c.n)

	var s *big.Int
	if c.p != nil {
		s, err = c.crt(random, mb)
	} else {
		s, err = c.plain(random, mb)
	}
	if err != nil {
		return nil, err
	}
	// Unblind: s = sb · r⁻¹ mod n.
	s.Mul(s, rInv).Mod(s, c.n)

	if new(big.Int).Exp(s, c.e, c.n).Cmp(m) != 0 {
		return nil, errors.New("RSA private operation failed its consistency check")
	}
	return s.FillBytes(make([]byte, c.size)), nil
}

// blinder returns a random r in [1, n) invertible mod n, and r⁻¹.
func (c *rsaCRT) blinder(random io.Reader) (r, rInv *big.Int, err error) {
	for range 64 {
		r, err = rand.Int(random, c.n)
		if err != nil {
			return nil, nil, fmt.Errorf("RSA blinding: %w", err)
		}
		if r.Sign() == 0 {
			continue
		}
		if rInv = new(big.Int).ModInverse(r, c.n); rInv != nil {
			return r, rInv, nil
		}
	}
	return nil, nil, errors.New("RSA blinding: no invertible blinding value found")
}

// blindExp returns d + k·order for a random 64-bit k.
func blindExp(random io.Reader, d, order *big.Int) (*big.Int, error) {
	var b [8]byte
	if _, err := io.ReadFull(random, b[:]); err != nil {
		return nil, fmt.Errorf("RSA exponent blinding: %w", err)
	}
	k := new(big.Int).SetBytes(b[:])
	return k.Mul(k, order).Add(k, d), nil
}

// crt computes x^d mod n from its halves mod p and mod q (Garner).
func (c *rsaCRT) crt(random io.Reader, x *big.Int) (*big.Int, error) {
	dp, err := blindExp(random, c.dp, c.pm1)
	if err != nil {
		return nil, err
	}
	dq, err := blindExp(random, c.dq, c.qm1)
	if err != nil {
		return nil, err
	}
	m1 := new(big.Int).Mod(x, c.p)
	m1.Exp(m1, dp, c.p)
	m2 := new(big.Int).Mod(x, c.q)
	m2.Exp(m2, dq, c.q)
	h := m1.Sub(m1, m2)
	h.Mul(h, c.qinv).Mod(h, c.p) // Mod is Euclidean: h ≥ 0
	return h.Mul(h, c.q).Add(h, m2), nil
}

// plain computes x^d mod n without CRT (multi-prime keys).
func (c *rsaCRT) plain(random io.Reader, x *big.Int) (*big.Int, error) {
	d, err := blindExp(random, c.d, c.phi)
	if err != nil {
		return nil, err
	}
	return new(big.Int).Exp(x, d, c.n), nil
}
