package tgsp

import (
	"fmt"
	"testing"
)

func TestInterleaveFiles(t *testing.T) {
	var jobs []shardJob
	for _, f := range []struct{ file, shards int }{{0, 3}, {2, 1}, {3, 2}} {
		for s := 0; s < f.shards; s++ {
			jobs = append(jobs, shardJob{file: f.file, shard: s})
		}
	}
	var got []string
	for _, j := range interleaveFiles(jobs) {
		got = append(got, fmt.Sprintf("%d/%d", j.file, j.shard))
	}
	want := "[0/0 2/0 3/0 0/1 3/1 0/2]"
	if fmt.Sprint(got) != want {
		t.Fatalf("interleaveFiles: %v, want %s", got, want)
	}
	if len(interleaveFiles(nil)) != 0 {
		t.Fatal("interleaveFiles(nil) is not empty")
	}
}
