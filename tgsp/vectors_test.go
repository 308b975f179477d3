package tgsp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"testing"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Test vectors for SPEC.md §8: fixed inputs and the outputs of the format's
// primitives, so that another implementation can check itself. Each value is
// computed twice, once through this package's code and once directly from
// the SPEC.md text (hkdf, sha256, aes-gcm, ed25519 called here), and both
// must agree before they are compared with testdata/vectors.json.
// `go test ./tgsp -run TestVectors -update-golden` rewrites the file.

const vecFile = "testdata/vectors.json"

type vecVectors struct {
	Comment       string          `json:"comment"`
	Header        string          `json:"header"`
	DEK           string          `json:"dek"`
	DEKCommitment string          `json:"dek_commitment"`
	DigestKey     string          `json:"digest_key"`
	DigestHello   string          `json:"digest_of_hello"`
	FileKeys      []vecFileKey    `json:"file_keys"`
	TwoChunkFile  vecTwoChunkFile `json:"two_chunk_file"`
	ChunkNonces   []vecNonce      `json:"chunk_nonces"`
	SignerKey     vecSignerKey    `json:"signer_key"`
	RecipientKey  vecRecipientKey `json:"recipient_key"`
	Composite     vecComposite    `json:"composite"`
}

type vecFileKey struct {
	FileIndex  int    `json:"file_index"`
	Info       string `json:"info"`
	Key        string `json:"key"`
	Plaintext  string `json:"plaintext"`
	Nonce      string `json:"nonce"`
	Ciphertext string `json:"ciphertext"`
}

type vecTwoChunkFile struct {
	FileIndex        int    `json:"file_index"`
	Plaintext        string `json:"plaintext"`
	CiphertextSize   int    `json:"ciphertext_size"`
	CiphertextSHA256 string `json:"ciphertext_sha256"`
	LastChunk        string `json:"last_chunk"`
	Digest           string `json:"digest"`
}

type vecNonce struct {
	Counter uint64 `json:"counter"`
	Last    bool   `json:"last"`
	Nonce   string `json:"nonce"`
}

type vecSignerKey struct {
	PrivateBody          string `json:"private_body"`
	MLDSAPublicKeySHA256 string `json:"mldsa65_public_key_sha256"`
	Ed25519PublicKey     string `json:"ed25519_public_key"`
	PublicBodySHA256     string `json:"public_body_sha256"`
	KeyID                string `json:"key_id"`
}

type vecRecipientKey struct {
	PrivateBody      string `json:"private_body"`
	PublicBodySHA256 string `json:"public_body_sha256"`
	KeyID            string `json:"key_id"`
}

type vecComposite struct {
	Message            string `json:"message"`
	Context            string `json:"context"`
	MPrime             string `json:"m_prime"`
	MPrimeSHA256       string `json:"m_prime_sha256"`
	Ed25519Signature   string `json:"ed25519_signature"`
	MLDSADeterministic string `json:"mldsa65_deterministic_signature_sha256"`
}

// vecSeq returns the bytes from, from+1, …, from+n-1.
func vecSeq(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(from + i)
	}
	return b
}

func vecSHA256(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

// vecCompute computes every vector, failing t where this package's code and
// the independent computation from SPEC.md disagree.
func vecCompute(t *testing.T) vecVectors {
	t.Helper()
	check := func(what string, lib, spec []byte) {
		t.Helper()
		if !bytes.Equal(lib, spec) {
			t.Errorf("%s: package code gives %x, SPEC.md gives %x", what, lib, spec)
		}
	}
	must := func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v := vecVectors{
		Comment: "TGSP format v1 test vectors (SPEC.md §8). Byte strings are hex; " +
			"the DEK is 00..1f, the signer key body 01 || 00..3f, the recipient key body 01 || 00..1f.",
		Header: hex.EncodeToString(headerBytes()),
	}
	check("header", headerBytes(), []byte("\x89TGSP\r\n\x1a\x00\x01\x00\x00\x00\x00\x00\x00"))

	// (a) DEK commitment.
	rawDEK := vecSeq(0, 32)
	dek, err := newDEK(rawDEK)
	if err != nil {
		t.Fatal(err)
	}
	v.DEK = hex.EncodeToString(rawDEK)
	c := dek.Commitment()
	specC := sha256.Sum256(append([]byte("tgsp/v1 dek commitment"), rawDEK...))
	check("dek commitment", c[:], specC[:])
	v.DEKCommitment = hex.EncodeToString(c[:])

	// (f) Plaintext digest key and the digest of "hello\n".
	digestKey := must(hkdf.Key(sha256.New, rawDEK, []byte("tgsp/v1"), "tgsp/v1 file digest key", 32))
	v.DigestKey = hex.EncodeToString(digestKey)
	mac := dek.digestMAC()
	mac.Write([]byte("hello\n"))
	ref := hmac.New(sha256.New, digestKey)
	ref.Write([]byte("hello\n"))
	check("digest of hello", mac.Sum(nil), ref.Sum(nil))
	v.DigestHello = hex.EncodeToString(mac.Sum(nil))

	// (b) File keys and a one-chunk STREAM.
	for _, i := range []int{0, 3} {
		info := "tgsp/v1 payload key " + strconv.Itoa(i)
		key := must(hkdf.Key(sha256.New, rawDEK, []byte("tgsp/v1"), info, 32))
		var nonce [12]byte
		chunkNonce(&nonce, 0, true)
		aead, err := dek.fileAEAD(i)
		if err != nil {
			t.Fatal(err)
		}
		ct := aead.Seal(nil, nonce[:], []byte("tgsp"), nil)
		check(fmt.Sprintf("file %d chunk 0", i), ct, vecGCM(t, key).Seal(nil, vecNonceOf(0, true), []byte("tgsp"), nil))
		v.FileKeys = append(v.FileKeys, vecFileKey{FileIndex: i, Info: info, Key: hex.EncodeToString(key),
			Plaintext: "tgsp", Nonce: hex.EncodeToString(nonce[:]), Ciphertext: hex.EncodeToString(ct)})
	}

	// (b) A two-chunk file: ChunkSize+1 bytes of 'a' as file 0, sealed the
	// way Pack does it (through chunkSealer, into a real manifest entry).
	pt := bytes.Repeat([]byte{'a'}, ChunkSize+1)
	dir := writeTree(t, map[string][]byte{"f": pt})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var stored bytes.Buffer
	e := Entry{Path: "f", Type: TypeFile, Size: int64(len(pt))}
	if err := newChunkSealer().sealFile(&stored, root.FS(), dek, 0, &e); err != nil {
		t.Fatal(err)
	}
	key0 := must(hkdf.Key(sha256.New, rawDEK, []byte("tgsp/v1"), "tgsp/v1 payload key 0", 32))
	spec := vecGCM(t, key0).Seal(nil, vecNonceOf(0, false), pt[:ChunkSize], nil)
	spec = vecGCM(t, key0).Seal(spec, vecNonceOf(1, true), pt[ChunkSize:], nil)
	check("two-chunk file", stored.Bytes(), spec)
	h := sha256.Sum256(spec)
	if len(e.Shards) != 1 || e.Shards[0] != h {
		t.Errorf("two-chunk file: shard hashes %v, want the SHA-256 of the whole ciphertext", e.Shards)
	}
	ref = hmac.New(sha256.New, digestKey)
	ref.Write(pt)
	check("two-chunk file digest", e.Digest[:], ref.Sum(nil))
	v.TwoChunkFile = vecTwoChunkFile{FileIndex: 0, Plaintext: fmt.Sprintf("%d bytes of 0x61", len(pt)),
		CiphertextSize: stored.Len(), CiphertextSHA256: hex.EncodeToString(h[:]),
		LastChunk: hex.EncodeToString(spec[CipherChunkSize:]), Digest: e.Digest.String()}

	// (c) Chunk nonces.
	for _, n := range []vecNonce{{Counter: 0}, {Counter: 1, Last: true}, {Counter: 1<<40 + 5}} {
		var nonce [12]byte
		chunkNonce(&nonce, n.Counter, n.Last)
		check(fmt.Sprintf("nonce %d %v", n.Counter, n.Last), nonce[:], vecNonceOf(n.Counter, n.Last))
		n.Nonce = hex.EncodeToString(nonce[:])
		v.ChunkNonces = append(v.ChunkNonces, n)
	}

	// (e) Key ids.
	sBody := append([]byte{keyAlgV1}, vecSeq(0, 64)...)
	signer, err := parseSignerPrivate(sBody)
	if err != nil {
		t.Fatal(err)
	}
	var pqSeed [32]byte
	copy(pqSeed[:], sBody[1:33])
	pqPub, pqPriv := mldsa65.NewKeyFromSeed(&pqSeed)
	edPriv := ed25519.NewKeyFromSeed(sBody[33:])
	edPub := edPriv.Public().(ed25519.PublicKey)
	sPub := append(append([]byte{keyAlgV1}, pqPub.Bytes()...), edPub...)
	check("signer public body", signer.pub.raw, sPub)
	sID := sha256.Sum256(append([]byte("tgsp signer key id v1"), sPub...))
	check("signer key id", []byte(signer.pub.KeyID()), []byte(hex.EncodeToString(sID[:16])))
	v.SignerKey = vecSignerKey{PrivateBody: hex.EncodeToString(sBody), MLDSAPublicKeySHA256: vecSHA256(pqPub.Bytes()),
		Ed25519PublicKey: hex.EncodeToString(edPub), PublicBodySHA256: vecSHA256(sPub), KeyID: signer.pub.KeyID()}

	rBody := append([]byte{keyAlgV1}, vecSeq(0, 32)...)
	rcpt, err := parseRecipientPrivate(rBody)
	if err != nil {
		t.Fatal(err)
	}
	xk, err := xwing.NewPrivateKey(rBody[1:])
	if err != nil {
		t.Fatal(err)
	}
	rPub := append([]byte{keyAlgV1}, xk.PublicKey().Bytes()...)
	check("recipient public body", rcpt.pub.raw, rPub)
	rID := sha256.Sum256(append([]byte("tgsp recipient key id v1"), rPub...))
	check("recipient key id", []byte(rcpt.pub.KeyID()), []byte(hex.EncodeToString(rID[:16])))
	v.RecipientKey = vecRecipientKey{PrivateBody: hex.EncodeToString(rBody), PublicBodySHA256: vecSHA256(rPub), KeyID: rcpt.pub.KeyID()}

	// (d), (g) The composite message and signature.
	msg := []byte("tgsp test vector")
	mp := compositeMessage(msg)
	ph := sha512.Sum512(msg)
	specMP := []byte("CompositeAlgorithmSignatures2025" + "COMPSIG-MLDSA65-Ed25519-SHA512" + "\x10" + "tgsp-manifest-v1")
	specMP = append(specMP, ph[:]...)
	check("M'", mp, specMP)
	sig, err := signer.sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	check("Ed25519 half", sig[mldsaSigSize:], ed25519.Sign(edPriv, specMP))
	if !mldsa65.Verify(pqPub, specMP, []byte("COMPSIG-MLDSA65-Ed25519-SHA512"), sig[:mldsaSigSize]) {
		t.Error("the ML-DSA-65 half of the package code's signature does not verify over M'")
	}
	if err := signer.pub.verify(msg, sig); err != nil {
		t.Error(err)
	}
	det := make([]byte, mldsa65.SignatureSize)
	if err := mldsa65.SignTo(pqPriv, specMP, []byte("COMPSIG-MLDSA65-Ed25519-SHA512"), false, det); err != nil {
		t.Fatal(err)
	}
	detSig := append(det, sig[mldsaSigSize:]...)
	if err := signer.pub.verify(msg, detSig); err != nil {
		t.Errorf("a composite signature with a deterministic ML-DSA-65 half: %v", err)
	}
	v.Composite = vecComposite{Message: string(msg), Context: signatureCtx, MPrime: hex.EncodeToString(mp),
		MPrimeSHA256: vecSHA256(mp), Ed25519Signature: hex.EncodeToString(sig[mldsaSigSize:]),
		MLDSADeterministic: vecSHA256(det)}
	return v
}

func vecGCM(t *testing.T, key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

// vecNonceOf is the STREAM nonce as SPEC.md §4.2 words it: n as an 11-byte
// big-endian number, then the last-chunk flag.
func vecNonceOf(n uint64, last bool) []byte {
	nonce := make([]byte, 12)
	for i := 10; i >= 0; i-- {
		nonce[i] = byte(n)
		n >>= 8
	}
	if last {
		nonce[11] = 1
	}
	return nonce
}

// vecLines renders the vectors as "name = value" lines for SPEC.md.
func vecLines(v vecVectors) []string {
	l := []string{
		"header                      = " + v.Header,
		"DEK                         = " + v.DEK,
		"dek_commitment              = " + v.DEKCommitment,
		"digest key                  = " + v.DigestKey,
		`digest("hello\n")           = ` + v.DigestHello,
	}
	for _, k := range v.FileKeys {
		l = append(l,
			fmt.Sprintf("file key %d                  = %s", k.FileIndex, k.Key),
			fmt.Sprintf("file %d chunk 0 (last) nonce = %s", k.FileIndex, k.Nonce),
			fmt.Sprintf("file %d STREAM(%q)       = %s", k.FileIndex, k.Plaintext, k.Ciphertext))
	}
	f := v.TwoChunkFile
	l = append(l,
		fmt.Sprintf("file %d of %s: stored size %d", f.FileIndex, f.Plaintext, f.CiphertextSize),
		"  SHA-256(stored) = shard 0  = "+f.CiphertextSHA256,
		"  last chunk (ct || tag)    = "+f.LastChunk,
		"  digest                    = "+f.Digest)
	for _, n := range v.ChunkNonces {
		l = append(l, fmt.Sprintf("nonce(n=%d, last=%v) = %s", n.Counter, n.Last, n.Nonce))
	}
	s, r, c := v.SignerKey, v.RecipientKey, v.Composite
	l = append(l,
		"signer private body         = "+s.PrivateBody,
		"  SHA-256(ML-DSA-65 pub)    = "+s.MLDSAPublicKeySHA256,
		"  Ed25519 pub               = "+s.Ed25519PublicKey,
		"  SHA-256(public body)      = "+s.PublicBodySHA256,
		"  key id                    = "+s.KeyID,
		"recipient private body      = "+r.PrivateBody,
		"  SHA-256(public body)      = "+r.PublicBodySHA256,
		"  key id                    = "+r.KeyID,
		fmt.Sprintf("M' for M = %q (ctx %q):", c.Message, c.Context),
		"  M'                        = "+c.MPrime,
		"  SHA-256(M')               = "+c.MPrimeSHA256,
		"  Ed25519 half              = "+c.Ed25519Signature,
		"  SHA-256(ML-DSA-65 half, deterministic variant) = "+c.MLDSADeterministic)
	return l
}

func TestVectors(t *testing.T) {
	got := vecCompute(t)
	for _, line := range vecLines(got) {
		t.Log(line)
	}
	if *goldenUpdate {
		b, err := json.MarshalIndent(got, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vecFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("rewrote %s", vecFile)
	}
	b, err := os.ReadFile(vecFile)
	if err != nil {
		t.Fatalf("%v (regenerate with go test ./tgsp -run TestVectors -update-golden)", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var want vecVectors
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("%s: %v", vecFile, err)
	}
	if !reflect.DeepEqual(got, want) {
		gl, wl := vecLines(got), vecLines(want)
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("differs from %s:\n got  %s\n want %s", vecFile, g, w)
			}
		}
		t.Errorf("the vectors differ from %s; if the format changed on purpose, regenerate and update SPEC.md §8", vecFile)
	}
}
