package plancache

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Key identifies a built plan: a plan is valid only for the model it was
// built from, the TensorRT version that built it, the build options and the
// GPU it was built on. Two keys that differ in any field are different
// entries.
type Key struct {
	// ModelSHA256 is the sha256 of the ONNX model's bytes.
	ModelSHA256 [32]byte
	// TensorRTVersion is the version of the TensorRT library that builds
	// and runs the plan (tensorrt.Version(), e.g. "10.3.0").
	TensorRTVersion string
	// BuildOptions is a canonical text of the build options
	// (tensorrt.BuildOptions.Fingerprint()).
	BuildOptions string
	// Device identifies the GPU (tensorrt.Device().String(), e.g.
	// "Orin sm_87 cuda 12.6").
	Device string
}

// NewKey returns the key of the plan built from model with the given
// TensorRT version, build options and device.
func NewKey(model []byte, tensorRTVersion, buildOptions, device string) Key {
	return Key{ModelSHA256: sha256.Sum256(model), TensorRTVersion: tensorRTVersion, BuildOptions: buildOptions, Device: device}
}

// maxKeyField bounds a key's text fields; real ones are tens of bytes.
const maxKeyField = 4096

func (k Key) validate() error {
	if k.TensorRTVersion == "" || k.Device == "" {
		return fmt.Errorf("%w: a key needs a TensorRT version and a device identity", ErrInvalidKey)
	}
	if len(k.TensorRTVersion) > maxKeyField || len(k.BuildOptions) > maxKeyField || len(k.Device) > maxKeyField {
		return fmt.Errorf("%w: a key field is longer than %d bytes", ErrInvalidKey, maxKeyField)
	}
	return nil
}

// keyDomain starts every key encoding, so it cannot be mistaken for any
// other data authenticated with the cache key.
const keyDomain = "tensorguardflow/plancache/key/v1\x00"

// encode is the key's canonical bytes: the domain, the model hash, then
// each text field with a 4-byte big-endian length. It is the associated
// data of the entry's encryption, so an entry opens only under its own key.
func (k Key) encode() []byte {
	b := make([]byte, 0, len(keyDomain)+32+12+len(k.TensorRTVersion)+len(k.BuildOptions)+len(k.Device))
	b = append(b, keyDomain...)
	b = append(b, k.ModelSHA256[:]...)
	for _, s := range []string{k.TensorRTVersion, k.BuildOptions, k.Device} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// fileID names the key's entry file: the hex sha256 of its encoding (the
// name reveals nothing of the key but equality).
func (k Key) fileID() string {
	sum := sha256.Sum256(k.encode())
	return hex.EncodeToString(sum[:])
}

// The entry file format, version 1:
//
//	offset  size  field
//	0       6     magic "TGPLAN"
//	6       2     format version, big endian (1)
//	8       12    AES-GCM nonce, random
//	20      n+16  AES-256-GCM ciphertext of the n-byte plan, and its tag
//
// The associated data is the 8-byte header followed by the key's encoding.
const (
	entryMagic    = "TGPLAN"
	entryVersion  = 1
	headerSize    = 8
	nonceSize     = 12
	tagSize       = 16
	entryOverhead = headerSize + nonceSize + tagSize
)

// errEntry is what openEntry's failures wrap; Get reports them as
// ErrCorrupt.
var errEntry = errors.New("entry refused")

func entryHeader() []byte {
	return binary.BigEndian.AppendUint16([]byte(entryMagic), entryVersion)
}

func associatedData(header, key []byte) []byte {
	ad := make([]byte, 0, len(header)+len(key))
	return append(append(ad, header...), key...)
}

// sealEntry encrypts plan into an entry for the key whose encoding is key,
// with a nonce read from rnd.
func sealEntry(aead cipher.AEAD, key, plan []byte, rnd io.Reader) ([]byte, error) {
	if aead.NonceSize() != nonceSize || aead.Overhead() != tagSize {
		return nil, errors.New("plancache: the cipher is not AES-GCM with standard nonce and tag")
	}
	out := make([]byte, headerSize+nonceSize, headerSize+nonceSize+len(plan)+tagSize)
	copy(out, entryHeader())
	nonce := out[headerSize : headerSize+nonceSize]
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return nil, fmt.Errorf("plancache: nonce: %w", err)
	}
	return aead.Seal(out, nonce, plan, associatedData(out[:headerSize], key)), nil
}

// openEntry authenticates and decrypts an entry for the key whose encoding
// is key. It decrypts in place: data is overwritten, and the plan returned
// shares its memory. Any entry that was not sealed for this key under this
// cipher, or was changed in any byte, is refused with an error wrapping
// errEntry; no part of such an entry's content is returned.
func openEntry(aead cipher.AEAD, key, data []byte) ([]byte, error) {
	if len(data) < entryOverhead {
		return nil, fmt.Errorf("%w: %d bytes, shorter than any entry", errEntry, len(data))
	}
	if string(data[:len(entryMagic)]) != entryMagic {
		return nil, fmt.Errorf("%w: not a plan cache entry", errEntry)
	}
	if v := binary.BigEndian.Uint16(data[len(entryMagic):headerSize]); v != entryVersion {
		return nil, fmt.Errorf("%w: entry format version %d, this agent reads %d", errEntry, v, entryVersion)
	}
	nonce := data[headerSize : headerSize+nonceSize]
	ciphertext := data[headerSize+nonceSize:]
	plan, err := aead.Open(ciphertext[:0], nonce, ciphertext, associatedData(data[:headerSize], key))
	if err != nil {
		// Wrong key, another entry's file, or a changed byte: GCM cannot
		// tell them apart, and neither need we.
		return nil, fmt.Errorf("%w: authentication failed", errEntry)
	}
	return plan, nil
}
