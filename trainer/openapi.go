package trainer

import "encoding/json"

// openAPI describes every TG-Tinker route (served at /v1/openapi.json).
var openAPI = func() []byte {
	op := func(summary string, body string, ok string) map[string]any {
		o := map[string]any{"summary": summary, "security": []any{map[string]any{"apiKey": []any{}}},
			"responses": map[string]any{ok: map[string]any{"description": "success"}, "default": map[string]any{"description": "error: {\"error\":{\"code\",\"message\",\"request_id\"}}"}}}
		if body != "" {
			o["requestBody"] = map[string]any{"required": true, "content": map[string]any{"application/json": map[string]any{"schema": map[string]any{"$ref": "#/components/schemas/" + body}}}}
		}
		return o
	}
	clientOp := func(summary, body string) map[string]any {
		return map[string]any{"post": op(summary+" (queued; returns a future, 202; Idempotency-Key makes retries return the same one)", body, "202")}
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info":    map[string]any{"title": "TG-Tinker", "version": "1", "description": "Private fine-tuning with DP-SGD behind a Tinker-shaped API."},
		"paths": map[string]any{
			"/v1/training_clients": map[string]any{
				"post": op("create a training client (base model, LoRA, Adam, dp_config)", "TrainingClientConfig", "201"),
				"get":  op("list the tenant's training clients", "", "200"),
			},
			"/v1/training_clients/{id}":                  map[string]any{"get": op("a training client", "", "200")},
			"/v1/training_clients/{id}/privacy":          map[string]any{"get": op("ε spent, δ, accountant, steps and the remaining budget", "", "200")},
			"/v1/training_clients/{id}/forward_backward": clientOp("accumulate gradients (Tinker datums or input_ids/attention_mask/labels)", "ForwardBackwardRequest"),
			"/v1/training_clients/{id}/forward":          clientOp("loss without gradients", "ForwardBackwardRequest"),
			"/v1/training_clients/{id}/optim_step":       clientOp("apply the accumulated (noised) gradient with AdamW; refused with DP_BUDGET_EXCEEDED past target ε", "OptimStepRequest"),
			"/v1/training_clients/{id}/sample":           clientOp("generate completions", "SampleRequest"),
			"/v1/training_clients/{id}/save_state":       clientOp("save a sealed checkpoint (tinker://client/artifact)", "SaveStateRequest"),
			"/v1/training_clients/{id}/load_state":       clientOp("load a checkpoint of this tenant", "LoadStateRequest"),
			"/v1/training_clients/{id}/export":           clientOp("export the merged model as a signed TGSP package with dp_cert.json", "ExportRequest"),
			"/v1/futures/{id}":                           map[string]any{"get": op("a future's status", "", "200")},
			"/v1/futures/{id}/result":                    map[string]any{"get": op("a future's result (?wait=seconds long-polls; 202 while running, 410 once expired)", "", "200")},
			"/v1/futures/{id}/cancel":                    map[string]any{"post": op("cancel a queued or running future", "", "200")},
			"/v1/artifacts/{id}":                         map[string]any{"get": op("download an exported package", "", "200")},
		},
		"components": map[string]any{
			"securitySchemes": map[string]any{"apiKey": map[string]any{"type": "http", "scheme": "bearer", "description": "the control plane's API key, tgk_<key id>_<secret>"}},
			"schemas": map[string]any{
				"TrainingClientConfig":   map[string]any{"type": "object", "description": "trainer/client.TrainingClientConfig"},
				"ForwardBackwardRequest": map[string]any{"type": "object", "description": "trainer/client.ForwardBackwardRequest"},
				"OptimStepRequest":       map[string]any{"type": "object", "description": "trainer/client.OptimStepRequest"},
				"SampleRequest":          map[string]any{"type": "object", "description": "trainer/client.SampleRequest"},
				"SaveStateRequest":       map[string]any{"type": "object", "description": "trainer/client.SaveStateRequest"},
				"LoadStateRequest":       map[string]any{"type": "object", "description": "trainer/client.LoadStateRequest"},
				"ExportRequest":          map[string]any{"type": "object", "description": "trainer/client.ExportRequest"},
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
}()
