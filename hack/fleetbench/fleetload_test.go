package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestHeartbeatMirrorsAgent: the load phase's heartbeat has the JSON
// fields of the agent's, read from the agent's source since this package
// may not import it.
func TestHeartbeatMirrorsAgent(t *testing.T) {
	agent := jsonFields(t, "../../agent/telemetry.go")
	agent["Zone"] = jsonFields(t, "../../agent/internal/inference/thermal.go")["Zone"]
	for _, tc := range []struct {
		agentType string
		mirror    any
	}{
		{"Heartbeat", heartbeat{}},
		{"HeartbeatOutbox", heartbeatOutbox{}},
		{"HeartbeatModel", heartbeatModel{}},
		{"HeartbeatLatency", heartbeatLatency{}},
		{"Zone", thermalZone{}},
	} {
		want, ok := agent[tc.agentType]
		if !ok {
			t.Errorf("agent type %s not found", tc.agentType)
			continue
		}
		var got []string
		rt := reflect.TypeOf(tc.mirror)
		for i := range rt.NumField() {
			got = append(got, rt.Field(i).Tag.Get("json"))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: json fields %q, the agent's %q", rt.Name(), got, want)
		}
	}
	src := parseFile(t, "../../agent/telemetry.go")
	if !strings.Contains(src.text, strconv.Quote(telemetrySchema)) {
		t.Errorf("agent/telemetry.go does not define schema %q", telemetrySchema)
	}
}

type parsed struct {
	file *ast.File
	text string
}

func parseFile(t *testing.T, path string) parsed {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	ast.Inspect(f, func(n ast.Node) bool {
		if l, ok := n.(*ast.BasicLit); ok && l.Kind == token.STRING {
			b.WriteString(l.Value + "\n")
		}
		return true
	})
	return parsed{file: f, text: b.String()}
}

// jsonFields maps each struct type of a file to its fields' json tags, in
// order.
func jsonFields(t *testing.T, path string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	ast.Inspect(parseFile(t, path).file, func(n ast.Node) bool {
		ts, ok := n.(*ast.TypeSpec)
		if !ok {
			return true
		}
		st, ok := ts.Type.(*ast.StructType)
		if !ok {
			return false
		}
		var tags []string
		for _, f := range st.Fields.List {
			tag := ""
			if f.Tag != nil {
				v, err := strconv.Unquote(f.Tag.Value)
				if err != nil {
					t.Fatal(err)
				}
				tag = reflect.StructTag(v).Get("json")
			}
			tags = append(tags, tag)
		}
		out[ts.Name.Name] = tags
		return false
	})
	return out
}

// TestTelemetryTracker: a heartbeat counts only when published while
// measuring, is paired by its message id, and drained closes once every
// measured one arrived.
func TestTelemetryTracker(t *testing.T) {
	tr := newTelemetryTracker()
	t0 := time.Now()
	tr.published("before", t0, 700) // warm-up: not counted
	tr.setPhase(1)
	tr.published("a", t0, 700)
	tr.published("b", t0, 700)
	tr.received("before", t0.Add(time.Millisecond))
	tr.received("a", t0.Add(3*time.Millisecond))
	tr.received("a", t0.Add(4*time.Millisecond)) // a duplicate
	tr.setPhase(2)
	select {
	case <-tr.drained:
		t.Fatal("drained with b outstanding")
	default:
	}
	tr.received("b", t0.Add(5*time.Millisecond))
	select {
	case <-tr.drained:
	default:
		t.Fatal("not drained")
	}
	if tr.sent != 2 || tr.recv != 2 || len(tr.lat) != 2 || tr.lat[0] != 3*time.Millisecond {
		t.Errorf("sent %d recv %d lat %v", tr.sent, tr.recv, tr.lat)
	}
}

// TestLoadRunFailures: every kind of failure is reported and a slow run
// is not one.
func TestLoadRunFailures(t *testing.T) {
	ok := loadRun{Devices: 10, OnlineAfterSync: 10, OnlineAtEnd: 10, Evidence: 400, Verdicts: 398, Lost: 2,
		TelemetrySent: 1000, TelemetryRecv: 1000, RolloutState: "completed", Succeeded: 10,
		VerdictAll: latencyStats{P99Ms: 5000}, Job: latencyStats{P99Ms: 60000}}
	if f := ok.failures(); len(f) != 0 {
		t.Fatalf("a slow but complete run failed: %v", f)
	}
	for name, mut := range map[string]func(*loadRun){
		"offline after setup": func(r *loadRun) { r.OnlineAfterSync = 9 },
		"never trusted":       func(r *loadRun) { r.NeverTrusted = 1 },
		"untrusted verdict":   func(r *loadRun) { r.NotTrusted = 1 },
		"lost verdicts":       func(r *loadRun) { r.Lost = 3 },
		"no evidence":         func(r *loadRun) { r.Evidence, r.Verdicts, r.Lost = 0, 0, 0 },
		"lost heartbeats":     func(r *loadRun) { r.TelemetryLost = 6 },
		"rollout paused":      func(r *loadRun) { r.RolloutState = "paused" },
		"not converged":       func(r *loadRun) { r.NotDone = 1 },
		"grant refused":       func(r *loadRun) { r.GrantsRefused = 1 },
		"device failure":      func(r *loadRun) { r.DeviceFailures = []string{"x"} },
		"connection lost":     func(r *loadRun) { r.ConnErrors = 1 },
		"offline at the end":  func(r *loadRun) { r.OnlineAtEnd = 9 },
	} {
		r := ok
		mut(&r)
		if f := r.failures(); len(f) != 1 {
			t.Errorf("%s: failures %v, want one", name, f)
		}
	}
}
