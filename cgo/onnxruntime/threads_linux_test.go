package onnxruntime_test

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// osThreads counts the process's threads (Linux).
func osThreads(t *testing.T) int {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads: line in /proc/self/status")
	return 0
}

// TestThreadOptionsApplied shows the thread options reach ONNX Runtime: a
// session's intra-op pool has IntraOpThreads-1 threads of its own (the
// caller's thread is the last one), and parallel execution adds an inter-op
// pool. Not parallel, so other tests' sessions do not move the count.
func TestThreadOptionsApplied(t *testing.T) {
	onnxruntimetest.Init(t)
	model := mlpBytes(t)
	added := func(opts onnxruntime.Options) int {
		before := osThreads(t)
		s, err := onnxruntime.NewSession(model, opts)
		if err != nil {
			t.Fatal(err)
		}
		after := osThreads(t)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return after - before
	}
	one := added(onnxruntime.Options{IntraOpThreads: 1})
	eight := added(onnxruntime.Options{IntraOpThreads: 8})
	withInter := added(onnxruntime.Options{IntraOpThreads: 1, InterOpThreads: 6})
	t.Logf("threads added by a session: intra 1: %d, intra 8: %d, intra 1 + inter 6: %d", one, eight, withInter)
	// Allow the Go runtime a couple of threads of its own either way.
	if eight-one < 5 {
		t.Errorf("IntraOpThreads 8 added %d threads, IntraOpThreads 1 added %d: the option did not reach ONNX Runtime", eight, one)
	}
	if withInter-one < 3 {
		t.Errorf("InterOpThreads 6 added %d threads, none added %d: the option did not reach ONNX Runtime", withInter, one)
	}
}
