package signedop

import (
	"errors"
	"math/big"
)

// Ed25519 public keys that verify forgeries. Go's ed25519.Verify accepts,
// under a public key of small order (the identity point, say), signatures
// anyone can make for any message: with A of order dividing 8, R = [S]B
// passes whenever [k]A is the identity, which for the identity holds
// always. No one holds the private key of such a point, so a trusted key
// of small order is a mistake, and NewVerifier refuses it, as it refuses
// 32 bytes that are no point at all. The check is done here with math/big,
// since the standard library does not export its curve arithmetic; it runs
// once per key, at NewVerifier.

var (
	fieldP = new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	// curveD is -121665/121666 mod p.
	curveD = func() *big.Int {
		num := new(big.Int).Neg(big.NewInt(121665))
		den := new(big.Int).ModInverse(big.NewInt(121666), fieldP)
		return num.Mul(num, den).Mod(num, fieldP)
	}()
	// sqrtM1 is a square root of -1 mod p: 2^((p-1)/4).
	sqrtM1 = new(big.Int).Exp(big.NewInt(2), new(big.Int).Rsh(new(big.Int).Sub(fieldP, big.NewInt(1)), 2), fieldP)
)

var (
	errNotPoint   = errors.New("not a point of the curve")
	errSmallOrder = errors.New("a point of small order, under which anyone can forge signatures")
)

// checkPublicPoint decodes key as crypto/ed25519 does (the y coordinate
// reduced mod p, as non-canonical encodings are accepted there) and
// refuses it if it is no point, or one of order 1, 2, 4 or 8.
func checkPublicPoint(key []byte) error {
	le := make([]byte, 32)
	for i := range 32 {
		le[31-i] = key[i]
	}
	sign := le[0] >> 7
	le[0] &= 0x7f
	p := fieldP
	y := new(big.Int).SetBytes(le)
	y.Mod(y, p)
	y2 := new(big.Int).Mul(y, y)
	y2.Mod(y2, p)
	u := new(big.Int).Sub(y2, big.NewInt(1))
	u.Mod(u, p)
	v := new(big.Int).Mul(curveD, y2)
	v.Add(v, big.NewInt(1)).Mod(v, p)
	vInv := new(big.Int).ModInverse(v, p)
	if vInv == nil {
		return errNotPoint
	}
	x2 := new(big.Int).Mul(u, vInv)
	x2.Mod(x2, p)
	// p = 5 mod 8: a root is x2^((p+3)/8), or that times sqrt(-1).
	x := new(big.Int).Exp(x2, new(big.Int).Rsh(new(big.Int).Add(p, big.NewInt(3)), 3), p)
	if sq := new(big.Int).Mul(x, x); sq.Mod(sq, p).Cmp(x2) != 0 {
		x.Mul(x, sqrtM1).Mod(x, p)
		if sq := new(big.Int).Mul(x, x); sq.Mod(sq, p).Cmp(x2) != 0 {
			return errNotPoint
		}
	}
	if x.Bit(0) != uint(sign) {
		x.Sub(p, x).Mod(x, p)
	}
	// [8]P by three doublings; small order iff that is the identity.
	for range 3 {
		x, y = edAdd(x, y, x, y)
	}
	if x.Sign() == 0 && y.Cmp(big.NewInt(1)) == 0 {
		return errSmallOrder
	}
	return nil
}

// edAdd adds two points of the twisted Edwards curve -x²+y² = 1+dx²y².
func edAdd(x1, y1, x2, y2 *big.Int) (*big.Int, *big.Int) {
	p := fieldP
	t := new(big.Int).Mul(x1, x2)
	t.Mul(t, y1).Mul(t, y2).Mul(t, curveD).Mod(t, p)
	xn := new(big.Int).Mul(x1, y2)
	xn.Add(xn, new(big.Int).Mul(y1, x2))
	xd := new(big.Int).Add(big.NewInt(1), t)
	yn := new(big.Int).Mul(y1, y2)
	yn.Add(yn, new(big.Int).Mul(x1, x2))
	yd := new(big.Int).Sub(big.NewInt(1), t)
	yd.Mod(yd, p)
	x3 := xn.Mul(xn, new(big.Int).ModInverse(xd.Mod(xd, p), p))
	y3 := yn.Mul(yn, new(big.Int).ModInverse(yd, p))
	return x3.Mod(x3, p), y3.Mod(y3, p)
}
