#!/usr/bin/env bash
# Time torchdr-sc at two git revisions on the same machine, in alternation (A B A B ...).
#
#   bash benchmarks/compare_revisions.sh REV_A REV_B [ROUNDS] [-- extra benchmarks.run options]
#
# Each revision is checked out in its own worktree under $TMPDIR and its own harness
# (benchmarks/run.py of that revision) runs with PYTHONPATH pointing at that revision's
# src/, so the installed package does not matter. Default run: synthetic 200k, UMAP,
# InfoTSNE and LargeVis, backend 'auto', no peers. Results: benchmarks/results/
# compare-<A>-<B>-round<i>-<rev>.{jsonl,md} of the revision each round ran.
set -euo pipefail
rev_a=${1:?REV_A}; rev_b=${2:?REV_B}; rounds=${3:-2}
shift $(( $# >= 3 ? 3 : $# ))
[ "${1:-}" = "--" ] && shift
extra=("$@")
[ ${#extra[@]} -gt 0 ] || extra=(--datasets synthetic --sizes 200000 --methods umap infotsne largevis --backends auto --peers none)
top=$(git rev-parse --show-toplevel)
out="$top/benchmarks/results"
tmp=${TMPDIR:-/tmp}
for rev in "$rev_a" "$rev_b"; do
  sha=$(git -C "$top" rev-parse --short "$rev")
  [ -d "$tmp/tdr-$sha" ] || git -C "$top" worktree add -q --detach "$tmp/tdr-$sha" "$sha"
  mkdir -p "$tmp/tdr-$sha/benchmarks/.cache"
done
for i in $(seq 1 "$rounds"); do
  for rev in "$rev_a" "$rev_b"; do
    sha=$(git -C "$top" rev-parse --short "$rev")
    echo "== round $i: $rev ($sha)"
    (cd "$tmp/tdr-$sha" && PYTHONPATH="$tmp/tdr-$sha/src" python -m benchmarks.run "${extra[@]}" \
      --out "$out" --tag "compare-$(git -C "$top" rev-parse --short "$rev_a")-$(git -C "$top" rev-parse --short "$rev_b")-round$i-$sha")
  done
done
