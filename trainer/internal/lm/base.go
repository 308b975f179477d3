package lm

import (
	_ "embed"
	"fmt"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// BaseModelName is the name clients use for the shipped base model.
const BaseModelName = "tg-lm-base"

// BaseModelSHA256 is the hex SHA-256 of the shipped checkpoint
// (base/tg-lm-base.ckpt): the "base model hash" an exported model's
// evidence cites. A test pins it; retraining the base changes it.
const BaseModelSHA256 = "c07ba7c04870b984bbf3f8a1654897efa0e0f577f6e886e3632abeb2eb621ca8"

// BaseConfig is the shape of the shipped base model: 256 bytes, 64
// positions, 3 blocks of width 96 with 4 heads and an MLP of 384 —
// 366,432 parameters, 1.5 MB as float32. Small enough to pretrain on two
// CPU cores in under half an hour and to fine-tune with DP-SGD in tests.
func BaseConfig() onnxmodel.LMConfig {
	return onnxmodel.LMConfig{Vocab: 256, Context: 64, Dim: 96, Layers: 3, Heads: 4, FF: 384}
}

//go:embed base/tg-lm-base.ckpt
var baseCheckpoint []byte

// BaseCheckpoint returns a copy of the shipped checkpoint's bytes.
func BaseCheckpoint() []byte { return append([]byte(nil), baseCheckpoint...) }

// LoadBase decodes the shipped base model and returns it with its hash.
func LoadBase() (onnxmodel.LM, string, error) {
	m, err := DecodeCheckpoint(baseCheckpoint)
	if err != nil {
		return onnxmodel.LM{}, "", fmt.Errorf("load %s: %w", BaseModelName, err)
	}
	return m, CheckpointHash(baseCheckpoint), nil
}
