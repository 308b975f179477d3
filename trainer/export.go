package trainer

import (
	"encoding/json"
	"fmt"
)

// LMPackageFiles builds the package convention files (docs/packages.md)
// for a causal LM exported as ONNX (input input_ids int64 [batch, seq],
// output logits float32 [batch, seq, vocab]): tg-model.json with runtime
// "onnx" (the best backend on each device) and a self-test whose expected
// logits the trainer's own forward pass computed for probe. The agent
// commits the model only if it reproduces them.
func LMPackageFiles(onnx []byte, forward func(tokens [][]int64) ([][][]float32, error), probe []int64) (Exported, error) {
	logits, err := forward([][]int64{probe})
	if err != nil {
		return Exported{}, fmt.Errorf("self-test forward: %w", err)
	}
	flat := make([]float32, 0, len(logits[0])*len(logits[0][0]))
	for _, row := range logits[0] {
		flat = append(flat, row...)
	}
	in := make([]float32, len(probe))
	for i, v := range probe {
		in[i] = float32(v)
	}
	spec, err := json.Marshal(map[string]any{
		"schema": "tg.model.v1", "runtime": "onnx", "model": "model.onnx",
		"inputs": []string{"input_ids"}, "outputs": []string{"logits"}, "selftest": "selftest.json",
	})
	if err != nil {
		return Exported{}, err
	}
	st, err := json.Marshal(map[string]any{
		"schema": "tg.selftest.v1", "tolerance": 1e-3, "rtol": 1e-3,
		"cases": []any{map[string]any{
			"name":    "probe",
			"inputs":  map[string]any{"input_ids": map[string]any{"shape": []int{1, len(probe)}, "data": in}},
			"outputs": map[string]any{"logits": map[string]any{"shape": []int{1, len(probe), len(logits[0][0])}, "data": flat}},
		}},
	})
	if err != nil {
		return Exported{}, err
	}
	return Exported{Files: map[string][]byte{"model.onnx": onnx, "tg-model.json": spec, "selftest.json": st}}, nil
}
