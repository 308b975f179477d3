#!/usr/bin/env bash
# Pretrains TG-Tinker's base byte-level LM ("tg-lm-base") and writes its
# checkpoint to trainer/internal/lm/base/tg-lm-base.ckpt (the file the
# trainer embeds). The program itself is trainer/internal/lm/cmd/pretrain-lm:
# it uses the trainer's internal lm package, which Go lets only code under
# trainer/ import, so it cannot live here.
#
# Fetches the WordNet text first (hack/fetch-wordnet.sh); if that fails, the
# program falls back to /usr/share/common-licenses and says so. Runs at low
# priority (nice 10) with the pure-Go GoMLX backend. Extra arguments go to
# the program (-steps, -batch, -lr, -max-time, -out, the model shape; -h
# lists them). The defaults reproduce the shipped checkpoint's run: at most
# 1500 steps within a 27-minute budget (807 steps on 2 shared cores; see
# trainer/internal/lm/base/README.md).
#
#   bash hack/pretrain-lm/run.sh [flags]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash hack/fetch-wordnet.sh >/dev/null ||
	echo "pretrain-lm: could not fetch WordNet; the program will fall back to /usr/share/common-licenses" >&2
export GOMLX_BACKEND="${GOMLX_BACKEND:-go:parallelism=-1}"
exec nice -n 10 go run ./trainer/internal/lm/cmd/pretrain-lm "$@"
