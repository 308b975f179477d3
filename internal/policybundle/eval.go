package policybundle

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/util"
)

// Decision is the answer of data.tensorguard.install for one input.
type Decision struct {
	Allow   bool     `json:"allow"`
	Reasons []string `json:"reasons"`
}

// Evaluator evaluates one bundle's install decision. It is prepared once
// (parsing, compiling and loading the data happen in Prepare) and is safe
// for concurrent use.
type Evaluator struct {
	pq rego.PreparedEvalQuery
}

// Prepare compiles b for evaluation.
func (b *Bundle) Prepare(ctx context.Context) (*Evaluator, error) { return prepare(ctx, b.b) }

// Prepare compiles u for evaluation (tests of policy sources).
func (u *Unsigned) Prepare(ctx context.Context) (*Evaluator, error) { return prepare(ctx, u.b) }

func prepare(ctx context.Context, b bundle.Bundle) (*Evaluator, error) {
	cp := b.Copy()
	pq, err := rego.New(
		rego.Query(Query),
		rego.ParsedBundle("tensorguard", &cp),
		rego.Capabilities(Capabilities()),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare policy: %w", err)
	}
	return &Evaluator{pq: pq}, nil
}

// Evaluate decides on input (any value that marshals to a JSON object).
// It denies unless the policy's allow is the boolean true; the reasons are
// the policy's "reasons" (an array or set of strings; anything else is
// shown as JSON) or, failing those, its "deny" set. A denial without a
// reason gets one. An error means no decision could be made (the caller
// must treat it as a denial).
func (e *Evaluator) Evaluate(ctx context.Context, input any) (Decision, error) {
	// Through JSON, so that the policy sees what docs/policy.md documents
	// (field names from json tags, numbers as JSON numbers).
	raw, err := json.Marshal(input)
	if err != nil {
		return Decision{}, fmt.Errorf("policy input: %w", err)
	}
	var doc any
	if err := util.UnmarshalJSON(raw, &doc); err != nil {
		return Decision{}, fmt.Errorf("policy input: %w", err)
	}
	rs, err := e.pq.Eval(ctx, rego.EvalInput(doc))
	if err != nil {
		return Decision{}, fmt.Errorf("evaluate policy: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{Reasons: []string{Query + " is undefined"}}, nil
	}
	obj, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return Decision{Reasons: []string{Query + " is not an object"}}, nil
	}
	d := Decision{Reasons: []string{}}
	d.Allow, _ = obj["allow"].(bool)
	d.Reasons = append(d.Reasons, stringsOf(obj["reasons"])...)
	if len(d.Reasons) == 0 {
		d.Reasons = append(d.Reasons, stringsOf(obj["deny"])...)
	}
	if !d.Allow && len(d.Reasons) == 0 {
		if _, defined := obj["allow"]; !defined {
			d.Reasons = []string{AllowRule + " is undefined"}
		} else {
			d.Reasons = []string{"denied by policy (no reason given)"}
		}
	}
	return d, nil
}

// stringsOf flattens an array or set of reasons.
func stringsOf(v any) []string {
	items, ok := v.([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		if s, ok := it.(string); ok {
			out = append(out, s)
			continue
		}
		b, err := json.Marshal(it)
		if err != nil {
			b = fmt.Appendf(nil, "%v", it)
		}
		out = append(out, string(b))
	}
	return out
}
