package lm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// The checkpoint format (version 1) holds one LM's weights. All integers
// are little-endian:
//
//	magic    8 bytes  "TGLMCKPT"
//	version  u32      1
//	config   6 × u32  Vocab, Context, Dim, Layers, Heads, FF
//	count    u32      number of tensors
//	count × header:   u16 name length, name (ASCII), u8 rank, rank × u32 dimensions
//	data              every tensor's float32 values, row-major, in header order
//	digest   32 bytes SHA-256 of everything before it
//
// The tensors are exactly onnxmodel.LM.Params of the config, in that order,
// with those names and shapes, and every value is finite; anything else is
// refused. So a checkpoint has one encoding, and the SHA-256 of the file is
// a name for the weights: the base model hash.
const (
	checkpointMagic   = "TGLMCKPT"
	CheckpointVersion = 1
	// MaxCheckpointSize bounds what ReadCheckpoint accepts (the shipped
	// base is a few MB).
	MaxCheckpointSize = 256 << 20
	checkpointFixed   = 8 + 4 + 6*4 + 4
	digestSize        = sha256.Size
)

// ErrInvalidCheckpoint wraps every reason a checkpoint is refused.
var ErrInvalidCheckpoint = errors.New("lm: invalid checkpoint")

// EncodeCheckpoint returns the checkpoint bytes of m, which must be valid
// and finite.
func EncodeCheckpoint(m onnxmodel.LM) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	c := m.Config
	params := m.Params()
	var buf bytes.Buffer
	buf.WriteString(checkpointMagic)
	u32 := func(v int) { _ = binary.Write(&buf, binary.LittleEndian, uint32(v)) }
	u32(CheckpointVersion)
	for _, v := range []int{c.Vocab, c.Context, c.Dim, c.Layers, c.Heads, c.FF} {
		u32(v)
	}
	u32(len(params))
	for _, p := range params {
		_ = binary.Write(&buf, binary.LittleEndian, uint16(len(p.Name)))
		buf.WriteString(p.Name)
		buf.WriteByte(byte(len(p.Shape)))
		for _, d := range p.Shape {
			u32(d)
		}
	}
	var word [4]byte
	for _, p := range params {
		for _, v := range p.Data {
			binary.LittleEndian.PutUint32(word[:], math.Float32bits(v))
			buf.Write(word[:])
		}
	}
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	return buf.Bytes(), nil
}

// DecodeCheckpoint parses checkpoint bytes, refusing (with an error that
// wraps ErrInvalidCheckpoint) anything that is not exactly what
// EncodeCheckpoint writes for some valid LM.
func DecodeCheckpoint(data []byte) (onnxmodel.LM, error) {
	bad := func(format string, args ...any) (onnxmodel.LM, error) {
		return onnxmodel.LM{}, fmt.Errorf("%w: %s", ErrInvalidCheckpoint, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxCheckpointSize {
		return bad("%d bytes, more than %d", len(data), MaxCheckpointSize)
	}
	if len(data) < checkpointFixed+digestSize {
		return bad("%d bytes is too short", len(data))
	}
	if string(data[:8]) != checkpointMagic {
		return bad("not a TensorGuard LM checkpoint (magic %q)", data[:8])
	}
	body, digest := data[:len(data)-digestSize], data[len(data)-digestSize:]
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], digest) {
		return bad("SHA-256 digest does not match (truncated or corrupted)")
	}
	r := reader{b: body, off: 8}
	if v := r.u32(); v != CheckpointVersion {
		return bad("version %d, this build reads %d", v, CheckpointVersion)
	}
	var dims [6]uint32
	for i := range dims {
		dims[i] = r.u32()
	}
	for _, d := range dims {
		if d == 0 || d > math.MaxInt32 {
			return bad("config %v out of range", dims)
		}
	}
	cfg := onnxmodel.LMConfig{Vocab: int(dims[0]), Context: int(dims[1]), Dim: int(dims[2]), Layers: int(dims[3]), Heads: int(dims[4]), FF: int(dims[5])}
	if err := cfg.Validate(); err != nil {
		return bad("config: %v", err)
	}
	// Before allocating anything of the config's size: its weights must fit
	// in the bytes at hand.
	if 4*cfg.NumParams() > int64(len(body)) {
		return bad("config %v needs %d bytes of weights, file has %d", cfg, 4*cfg.NumParams(), len(body))
	}
	layout := paramLayout(cfg)
	if n := r.u32(); int64(n) != int64(len(layout)) {
		return bad("%d tensors, config %v has %d", n, cfg, len(layout))
	}
	for i, p := range layout {
		nameLen := int(r.u16())
		name := r.bytes(nameLen)
		rank := int(r.u8())
		if r.err != nil {
			return bad("header of tensor %d: %v", i, r.err)
		}
		if string(name) != p.Name {
			return bad("tensor %d is %q, want %q", i, name, p.Name)
		}
		if rank != len(p.Shape) {
			return bad("tensor %s has rank %d, want %d", p.Name, rank, len(p.Shape))
		}
		for j := range rank {
			if d := r.u32(); int64(d) != int64(p.Shape[j]) {
				return bad("tensor %s dimension %d is %d, want %d", p.Name, j, d, p.Shape[j])
			}
		}
	}
	if r.err != nil {
		return bad("headers: %v", r.err)
	}
	if rest := int64(len(body) - r.off); rest != 4*cfg.NumParams() {
		return bad("%d bytes of data, the tensors need %d", rest, 4*cfg.NumParams())
	}
	m := allocLM(cfg)
	for _, p := range m.Params() {
		for j := range p.Data {
			v := math.Float32frombits(binary.LittleEndian.Uint32(body[r.off:]))
			r.off += 4
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return bad("tensor %s[%d] is %v", p.Name, j, v)
			}
			p.Data[j] = v
		}
	}
	return m, nil
}

// CheckpointHash is the hex SHA-256 of checkpoint bytes: the model hash
// that evidence and certificates cite.
func CheckpointHash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// WriteCheckpoint encodes m to w and returns the checkpoint's hash.
func WriteCheckpoint(w io.Writer, m onnxmodel.LM) (string, error) {
	b, err := EncodeCheckpoint(m)
	if err != nil {
		return "", err
	}
	if _, err := w.Write(b); err != nil {
		return "", fmt.Errorf("write checkpoint: %w", err)
	}
	return CheckpointHash(b), nil
}

// ReadCheckpoint reads and decodes a whole checkpoint (at most
// MaxCheckpointSize bytes) from r and returns it with its hash.
func ReadCheckpoint(r io.Reader) (onnxmodel.LM, string, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxCheckpointSize+1))
	if err != nil {
		return onnxmodel.LM{}, "", fmt.Errorf("read checkpoint: %w", err)
	}
	m, err := DecodeCheckpoint(b)
	if err != nil {
		return onnxmodel.LM{}, "", err
	}
	return m, CheckpointHash(b), nil
}

// allocLM returns an LM of shape cfg with zeroed weights.
func allocLM(cfg onnxmodel.LMConfig) onnxmodel.LM {
	d, ff := cfg.Dim, cfg.FF
	z := func(n int) []float32 { return make([]float32, n) }
	m := onnxmodel.LM{Config: cfg, TokenEmbedding: z(cfg.Vocab * d), PositionEmbedding: z(cfg.Context * d),
		FinalNormScale: z(d), FinalNormBias: z(d), Blocks: make([]onnxmodel.LMBlock, cfg.Layers)}
	for i := range m.Blocks {
		m.Blocks[i] = onnxmodel.LMBlock{
			Norm1Scale: z(d), Norm1Bias: z(d), WQ: z(d * d), BQ: z(d), WK: z(d * d), BK: z(d),
			WV: z(d * d), BV: z(d), WO: z(d * d), BO: z(d), Norm2Scale: z(d), Norm2Bias: z(d),
			W1: z(d * ff), B1: z(ff), W2: z(ff * d), B2: z(d),
		}
	}
	return m
}

// reader reads little-endian fields; past the end it records an error and
// returns zeros.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n > len(r.b)-r.off {
		r.err = io.ErrUnexpectedEOF
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *reader) u8() uint8 {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.bytes(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// sameLM reports whether two LMs have the same shape and bit-identical
// weights.
func sameLM(a, b onnxmodel.LM) bool {
	if a.Config != b.Config {
		return false
	}
	pa, pb := a.Params(), b.Params()
	if len(pa) != len(pb) {
		return false
	}
	for i := range pa {
		if pa[i].Name != pb[i].Name || !slices.Equal(pa[i].Shape, pb[i].Shape) || len(pa[i].Data) != len(pb[i].Data) {
			return false
		}
		for j := range pa[i].Data {
			if math.Float32bits(pa[i].Data[j]) != math.Float32bits(pb[i].Data[j]) {
				return false
			}
		}
	}
	return true
}
