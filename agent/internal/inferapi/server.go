package inferapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
)

// ErrNoModel is what a Source returns when no model is serving.
var ErrNoModel = errors.New("no model is loaded")

// Served is the model a Source serves.
type Served struct {
	Name, Version string
	Model         inference.Model
}

// Source gives the API the serving model: WithServing calls fn with it, and
// keeps it from being replaced or closed until fn returns; or it returns
// ErrNoModel.
type Source interface {
	WithServing(fn func(Served) error) error
}

// Config configures the handler.
type Config struct {
	Source Source
	Stats  *inference.Stats // nil: not recorded
	// MaxBodyBytes bounds a request body (default 64 MiB).
	MaxBodyBytes int64
	// MaxElements bounds the elements of one input tensor (default 64 Mi).
	MaxElements int64
	// ServerVersion is reported by GET /v2.
	ServerVersion string
	Logger        *slog.Logger
}

// Defaults.
const (
	DefaultMaxBodyBytes = 64 << 20
	DefaultMaxElements  = 64 << 20
)

type server struct {
	cfg Config
	log *slog.Logger
}

// NewHandler returns the v2 API.
func NewHandler(cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxElements <= 0 {
		cfg.MaxElements = DefaultMaxElements
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{cfg: cfg, log: cfg.Logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v2", s.metadata)
	mux.HandleFunc("GET /v2/health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	})
	mux.HandleFunc("GET /v2/health/ready", s.serverReady)
	for _, prefix := range []string{"/v2/models/{name}", "/v2/models/{name}/versions/{version}"} {
		mux.HandleFunc("GET "+prefix, s.modelMetadata)
		mux.HandleFunc("GET "+prefix+"/ready", s.modelReady)
		mux.HandleFunc("POST "+prefix+"/infer", s.infer)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route %s %s (see the Open Inference Protocol: /v2/models/{name}/infer)", r.Method, r.URL.Path)
	})
	return mux
}

func (s *server) metadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": "tg-agent", "version": s.cfg.ServerVersion, "extensions": []string{extensionBinary}})
}

func (s *server) serverReady(w http.ResponseWriter, _ *http.Request) {
	err := s.cfg.Source.WithServing(func(Served) error { return nil })
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]bool{"ready": false})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

// errStatus carries an HTTP status out of a WithServing callback.
type errStatus struct {
	code int
	msg  string
}

func (e *errStatus) Error() string { return e.msg }

func statusf(code int, format string, args ...any) error {
	return &errStatus{code: code, msg: fmt.Sprintf(format, args...)}
}

// withModel runs fn with the serving model if it is the one the request
// names, and writes any error.
func (s *server) withModel(w http.ResponseWriter, r *http.Request, fn func(Served) error) {
	name, version := r.PathValue("name"), r.PathValue("version")
	err := s.cfg.Source.WithServing(func(m Served) error {
		if m.Name != name {
			return statusf(http.StatusNotFound, "unknown model %q (serving %q)", name, m.Name)
		}
		if version != "" && version != m.Version {
			return statusf(http.StatusNotFound, "model %q has no version %q (serving %s)", name, version, m.Version)
		}
		return fn(m)
	})
	var es *errStatus
	switch {
	case err == nil:
	case errors.As(err, &es):
		writeError(w, es.code, "%s", es.msg)
	case errors.Is(err, ErrNoModel):
		writeError(w, http.StatusServiceUnavailable, "model %q is not loaded: this device serves no model yet", name)
	default:
		s.log.Warn("inference failed", "model", name, "err", err)
		writeError(w, http.StatusInternalServerError, "%v", err)
	}
}

type tensorMeta struct {
	Name     string  `json:"name"`
	DataType string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func metas(infos []inference.TensorInfo) []tensorMeta {
	out := make([]tensorMeta, len(infos))
	for i, in := range infos {
		out[i] = tensorMeta{Name: in.Name, DataType: string(in.DataType), Shape: in.Shape}
		if out[i].Shape == nil {
			out[i].Shape = []int64{}
		}
	}
	return out
}

func (s *server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	s.withModel(w, r, func(m Served) error {
		writeJSON(w, http.StatusOK, map[string]any{
			"name":     m.Name,
			"versions": []string{m.Version},
			"platform": m.Model.Backend(),
			"inputs":   metas(m.Model.Inputs()),
			"outputs":  metas(m.Model.Outputs()),
		})
		return nil
	})
}

func (s *server) modelReady(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("name") == "" {
		writeError(w, http.StatusNotFound, "no model named")
		return
	}
	s.withModel(w, r, func(m Served) error {
		writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "ready": true})
		return nil
	})
}

// inferRequest is the v2 inference request.
type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Inputs     []inputTensor   `json:"inputs"`
	Outputs    []struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters,omitempty"`
	} `json:"outputs,omitempty"`
}

type inputTensor struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	DataType   string          `json:"datatype"`
	Parameters json.RawMessage `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data"`
}

func (s *server) infer(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body exceeds %d bytes", s.cfg.MaxBodyBytes)
			return
		}
		writeError(w, http.StatusBadRequest, "read the request: %v", err)
		return
	}
	jsonPart, binPart, err := splitBody(r.Header, body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed inference request: %v", err)
		return
	}
	req, err := parseRequest(jsonPart)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed inference request: %v", err)
		return
	}
	plan, err := planBinary(req, binPart, len(r.Header.Values(headerContentLength)) > 0)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed inference request: %v", err)
		return
	}
	s.withModel(w, r, func(m Served) error {
		inputs, err := s.decodeInputs(req.Inputs, plan.inputs, m.Model.Inputs())
		if err != nil {
			s.observe(m, 0, true)
			return statusf(http.StatusBadRequest, "%v", err)
		}
		want, err := requestedOutputs(req, plan, m.Model.Outputs())
		if err != nil {
			s.observe(m, 0, true)
			return statusf(http.StatusBadRequest, "%v", err)
		}
		start := time.Now()
		out, err := m.Model.Infer(inputs)
		s.observe(m, time.Since(start), err != nil)
		if errors.Is(err, inference.ErrInvalidInput) {
			return statusf(http.StatusBadRequest, "%v", err)
		}
		if err != nil {
			return err
		}
		body, jsonLen, err := encodeResponse(m, req.ID, want, out)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(want, func(o wantedOutput) bool { return o.binary }) {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set(headerContentLength, strconv.Itoa(jsonLen))
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return nil
	})
}

func (s *server) observe(m Served, d time.Duration, failed bool) {
	if s.cfg.Stats != nil {
		s.cfg.Stats.Observe(inference.ModelKey{Name: m.Name, Version: m.Version, Backend: m.Model.Backend()}, d, failed)
	}
}

// decodeInputs turns the request's tensors into the model's: every model
// input given once, nothing else, the model's datatype, data matching the
// shape. bin holds each input's binary data (nil: the input is JSON).
func (s *server) decodeInputs(reqs []inputTensor, bin []*[]byte, infos []inference.TensorInfo) (map[string]inference.Tensor, error) {
	out := make(map[string]inference.Tensor, len(reqs))
	for k, t := range reqs {
		i := slices.IndexFunc(infos, func(in inference.TensorInfo) bool { return in.Name == t.Name })
		if i < 0 {
			return nil, fmt.Errorf("unknown input %q (the model's inputs: %s)", t.Name, names(infos))
		}
		if _, dup := out[t.Name]; dup {
			return nil, fmt.Errorf("input %q given twice", t.Name)
		}
		info := infos[i]
		if t.DataType != string(info.DataType) {
			return nil, fmt.Errorf("input %q is %s, got datatype %q", t.Name, info.DataType, t.DataType)
		}
		if len(t.Shape) == 0 {
			return nil, fmt.Errorf("input %q: shape is required", t.Name)
		}
		n, err := inference.Elements(t.Shape, s.cfg.MaxElements)
		if err != nil {
			return nil, fmt.Errorf("input %q: %v", t.Name, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("input %q: empty tensors (a 0 in shape %v) are not served", t.Name, t.Shape)
		}
		if bin[k] != nil {
			tensor, err := decodeBinary(*bin[k], info.DataType, t.Shape, n)
			if err != nil {
				return nil, fmt.Errorf("input %q: %v", t.Name, err)
			}
			out[t.Name] = tensor
			continue
		}
		tensor := inference.Tensor{Shape: t.Shape}
		switch info.DataType {
		case inference.FP32:
			tensor.Float32, err = decodeFloat32(t.Data, n)
		case inference.INT64:
			tensor.Int64, err = decodeInt64(t.Data, n)
		default:
			err = fmt.Errorf("datatype %s is not served", info.DataType)
		}
		if err != nil {
			return nil, fmt.Errorf("input %q: %v", t.Name, err)
		}
		out[t.Name] = tensor
	}
	for _, info := range infos {
		if _, ok := out[info.Name]; !ok {
			return nil, fmt.Errorf("missing input %q (the model's inputs: %s)", info.Name, names(infos))
		}
	}
	return out, nil
}

// wantedOutput is an output to return, and whether in binary.
type wantedOutput struct {
	name   string
	binary bool
}

// requestedOutputs lists the outputs to return: those the request names
// (the first mention of a name counts), or all of the model's.
func requestedOutputs(req inferRequest, plan binaryPlan, infos []inference.TensorInfo) ([]wantedOutput, error) {
	if len(req.Outputs) == 0 {
		all := make([]wantedOutput, len(infos))
		for i, in := range infos {
			all[i] = wantedOutput{name: in.Name, binary: plan.wantBinary(-1)}
		}
		return all, nil
	}
	var want []wantedOutput
	for i, o := range req.Outputs {
		if !slices.ContainsFunc(infos, func(in inference.TensorInfo) bool { return in.Name == o.Name }) {
			return nil, fmt.Errorf("unknown output %q (the model's outputs: %s)", o.Name, names(infos))
		}
		if !slices.ContainsFunc(want, func(w wantedOutput) bool { return w.name == o.Name }) {
			want = append(want, wantedOutput{name: o.Name, binary: plan.wantBinary(i)})
		}
	}
	return want, nil
}

func names(infos []inference.TensorInfo) string {
	var b bytes.Buffer
	for i, in := range infos {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(in.Name))
	}
	return b.String()
}

// encodeResponse writes the v2 response by hand: the data arrays are most
// of it, and strconv on a reused buffer is several times faster than
// reflection. Outputs wanted in binary carry their binary_data_size in the
// JSON and their bytes after it, in the same order; jsonLen is the JSON
// part's length (all of it when no output is binary).
func encodeResponse(m Served, id string, want []wantedOutput, out map[string]inference.Tensor) (body []byte, jsonLen int, err error) {
	b := make([]byte, 0, 256)
	b = append(b, `{"model_name":`...)
	b = strconv.AppendQuote(b, m.Name)
	b = append(b, `,"model_version":`...)
	b = strconv.AppendQuote(b, m.Version)
	if id != "" {
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, id)
	}
	b = append(b, `,"outputs":[`...)
	binBytes, anyBinary := 0, false
	for i, o := range want {
		name := o.name
		t, ok := out[name]
		if !ok {
			return nil, 0, fmt.Errorf("the backend returned no output %q", name)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = strconv.AppendQuote(b, name)
		b = append(b, `,"datatype":"`...)
		b = append(b, inference.TypeOf(t)...)
		b = append(b, `","shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		if o.binary {
			b = append(b, `],"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(binarySize(t)), 10)
			b = append(b, "}}"...)
			binBytes += binarySize(t)
			anyBinary = true
			continue
		}
		b = append(b, `],"data":[`...)
		b = appendData(b, t)
		b = append(b, "]}"...)
	}
	b = append(b, "]}"...)
	jsonLen = len(b)
	if !anyBinary {
		return b, jsonLen, nil
	}
	b = slices.Grow(b, binBytes)
	for _, o := range want {
		if o.binary {
			b = appendBinary(b, out[o.name])
		}
	}
	return b, jsonLen, nil
}

// appendData writes the elements; NaN and ±Inf, which JSON cannot carry,
// are written as null.
func appendData(b []byte, t inference.Tensor) []byte {
	for i, v := range t.Float32 {
		if i > 0 {
			b = append(b, ',')
		}
		f := float64(v)
		if f != f || f > 3.4028234663852886e38 || f < -3.4028234663852886e38 {
			b = append(b, "null"...)
			continue
		}
		b = strconv.AppendFloat(b, f, 'g', -1, 32)
	}
	for i, v := range t.Int64 {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, v, 10)
	}
	return b
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]string{"error": fmt.Sprintf(format, args...)})
}
