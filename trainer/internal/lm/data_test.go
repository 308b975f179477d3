package lm

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestHFExampleShiftsLabels(t *testing.T) {
	e, err := HFExample(
		[]int64{10, 11, 12, 13, 0},
		[]int64{1, 1, 1, 1, 0},
		[]int64{-100, 11, -100, 13, 99})
	if err != nil {
		t.Fatal(err)
	}
	// Position i predicts labels[i+1]; the masked tail is dropped.
	want := Example{
		Tokens:  []int32{10, 11, 12, 13},
		Targets: []int32{11, 0, 13, 0},
		Weights: []float32{1, 0, 1, 0},
	}
	if !slices.Equal(e.Tokens, want.Tokens) || !slices.Equal(e.Targets, want.Targets) || !slices.Equal(e.Weights, want.Weights) {
		t.Errorf("got %+v, want %+v", e, want)
	}
	// No labels: the inputs are the labels.
	e, err = HFExample([]int64{1, 2, 3}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Targets, []int32{2, 3, 0}) || !slices.Equal(e.Weights, []float32{1, 1, 0}) {
		t.Errorf("unlabelled: %+v", e)
	}
}

func TestTinkerAndTextExamples(t *testing.T) {
	e, err := TinkerExample([]int64{1, 2}, []int64{2, 3}, []float32{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.Targets, []int32{2, 3}) || !slices.Equal(e.Weights, []float32{0, 1}) {
		t.Errorf("tinker: %+v", e)
	}
	e = TextExample([]byte("abc"))
	if !slices.Equal(e.Tokens, []int32{'a', 'b'}) || !slices.Equal(e.Targets, []int32{'b', 'c'}) {
		t.Errorf("text: %+v", e)
	}
}

func TestExamplesRefuseBadInput(t *testing.T) {
	cfg := tinyConfig()
	long := make([]byte, cfg.Context+2)
	for name, err := range map[string]error{
		"left padding":    second(HFExample([]int64{1, 2}, []int64{0, 1}, nil)),
		"mask length":     second(HFExample([]int64{1, 2}, []int64{1}, nil)),
		"negative label":  second(HFExample([]int64{1, 2}, nil, []int64{1, -5})),
		"all masked":      second(HFExample([]int64{1}, []int64{0}, nil)),
		"tinker lengths":  second(TinkerExample([]int64{1, 2}, []int64{1}, []float32{1, 1})),
		"negative token":  second(TinkerExample([]int64{-1}, []int64{1}, []float32{1})),
		"too long":        TextExample(long).Validate(cfg),
		"target ≥ vocab":  Example{Tokens: []int32{1}, Targets: []int32{256}, Weights: []float32{1}}.Validate(cfg),
		"negative weight": Example{Tokens: []int32{1}, Targets: []int32{2}, Weights: []float32{-1}}.Validate(cfg),
		"NaN weight":      Example{Tokens: []int32{1}, Targets: []int32{2}, Weights: []float32{float32(math.NaN())}}.Validate(cfg),
		"empty":           Example{}.Validate(cfg),
		"dataset index":   second((&Dataset{Config: cfg}).Batch([]int{0})),
	} {
		if !errors.Is(err, ErrInvalidInput) {
			t.Errorf("%s: error %v, want ErrInvalidInput", name, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }
