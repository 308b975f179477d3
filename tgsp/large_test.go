package tgsp

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLargeFile packs, verifies and unpacks a sparse file of 4 GiB + 65537
// bytes, streaming the package through a file: chunk counters past 2^16,
// offsets past 2^32, a shard count past 1024 and bounded memory.
func TestLargeFile(t *testing.T) {
	if raceEnabled {
		t.Skip("4 GiB test runs in the non-race pass of make test")
	}
	if testing.Short() {
		t.Skip("4 GiB test does not run with -short")
	}
	const size = 1<<32 + 65537
	marks := map[int64]byte{0: 0x11, 1<<32 - 1: 0x22, 1 << 32: 0x33, size - 1: 0x44}

	in := t.TempDir()
	f, err := os.Create(filepath.Join(in, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for off, b := range marks {
		if _, err := f.WriteAt([]byte{b}, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	pkgPath := filepath.Join(t.TempDir(), "big.tgsp")
	pf, err := os.Create(pkgPath)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err := Pack(pf, in, defaultOpts())
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	if err := pf.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("pack: %v", time.Since(start).Round(time.Millisecond))
	if len(m.Files) != 1 || m.Files[0].Size != size || int64(len(m.Files[0].Shards)) != shardCount(size) {
		t.Fatalf("manifest: %d entries, size %d, %d shards", len(m.Files), m.Files[0].Size, len(m.Files[0].Shards))
	}

	pf, err = os.Open(pkgPath)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	fi, err := pf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if want := headerSize + cipherSize(size); fi.Size() <= want {
		t.Fatalf("package is %d bytes, the payload alone is %d", fi.Size(), want)
	}
	p, err := Open(pf, fi.Size())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	start = time.Now()
	if err := p.Verify(context.Background(), rtTrust(), testNow, 0); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	t.Logf("verify (%d bytes, %d shards): %v", fi.Size(), len(m.Files[0].Shards), time.Since(start).Round(time.Millisecond))
	dek, err := p.UnwrapDEK(sharedKeys.rcpt)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	start = time.Now()
	if err := p.Unpack(context.Background(), dek, out, UnpackOptions{CheckDigests: true}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	t.Logf("unpack with digest check: %v", time.Since(start).Round(time.Millisecond))

	g, err := os.Open(filepath.Join(out, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	gi, err := g.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if gi.Size() != size {
		t.Fatalf("unpacked size %d, want %d", gi.Size(), size)
	}
	if st, ok := gi.Sys().(*syscall.Stat_t); ok {
		t.Logf("unpacked file occupies %d KiB on disk", st.Blocks*512/1024)
	}
	// Windows around the marks and elsewhere; everything else is zero.
	const mib = 1 << 20
	for _, w := range [][2]int64{
		{0, 4 * mib},
		{1<<30 + 12345, 2 * mib},
		{3<<30 - mib/3, 3 * mib},
		{1<<32 - 3*mib, 3*mib + 65537}, // to the end of the file
		{size - 3*mib, 3 * mib},
	} {
		buf := make([]byte, w[1])
		if _, err := g.ReadAt(buf, w[0]); err != nil {
			t.Fatalf("read %d+%d: %v", w[0], w[1], err)
		}
		for i, b := range buf {
			off := w[0] + int64(i)
			if want := marks[off]; b != want {
				t.Fatalf("byte %d = %#x, want %#x", off, b, want)
			}
		}
	}
	if b := (fi.Size() - headerSize - cipherSize(size)); b > 1<<20 {
		t.Errorf("sections take %d bytes", b)
	}
}
