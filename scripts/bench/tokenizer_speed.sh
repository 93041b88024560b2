#!/usr/bin/env bash
# Times the HF tokenizers of tests/fixtures/tokenizers (qwen3 and llama2) in ftlua and in node's
# @huggingface/tokenizers (the reference the fixtures were made with), side by side: loading
# (tokenizer.json parse to a usable tokenizer) and single-thread encode throughput over the Debian
# fortunes (/usr/share/games/fortunes, package fortunes), one fortune a document, no special
# tokens. Prints a table of both load times, both speeds in MB/s and the ratios ftlua/node, and
# fails if the two count different numbers of tokens.
#
#   scripts/bench/tokenizer_speed.sh [MB (default: the fortunes once, about 2.5 MB)]
#
# MB repeats the fortunes until the text holds at least MB megabytes.
# FTLUA selects the ftlua binary (default build/ftlua), NODE the node binary (default node); the
# node packages are those of tests/gen/node (cd tests/gen/node && npm ci).
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
me=$(basename "$0")
if [ $# -gt 1 ]; then echo "$me: at most 1 argument, got $# (see --help)" >&2; exit 2; fi
if [ $# -eq 1 ]; then
  case "$1" in
    ''|*[!0-9]*|0) echo "$me: expected a positive integer (MB), got '$1' (see --help)" >&2; exit 2 ;;
  esac
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ftlua=${FTLUA:-$root/build/ftlua}
node=${NODE:-node}
fortunes=/usr/share/games/fortunes
fixtures=$root/tests/fixtures/tokenizers
names=(qwen3 llama2)

die() { echo "$me: $*" >&2; exit 1; }
[ -d "$fortunes" ] || die "no $fortunes: install the Debian package fortunes"
command -v "$node" > /dev/null || die "no node ($node): install nodejs, or set NODE"
[ -d "$root/tests/gen/node/node_modules/@huggingface/tokenizers" ] ||
  die "@huggingface/tokenizers is not installed: cd tests/gen/node && npm ci"
[ -x "$ftlua" ] || die "no ftlua at $ftlua: build it first, or set FTLUA"
"$ftlua" -e 'local ok, f = pcall(function() return ft.tokenizer.from_pretrained end)
  os.exit(ok and type(f) == "function" and 0 or 3)' 2> /dev/null ||
  die "this ftlua ($ftlua) has no HF tokenizer (ft.tokenizer.from_pretrained): build a version that has it"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The tokenizer folders, as from_pretrained and the node half read them.
dirs=()
for n in "${names[@]}"; do
  mkdir "$tmp/$n"
  gzip -dc "$fixtures/$n/tokenizer.json.gz" > "$tmp/$n/tokenizer.json"
  for f in tokenizer_config.json special_tokens_map.json; do
    [ ! -e "$fixtures/$n/$f" ] || cp "$fixtures/$n/$f" "$tmp/$n/"
  done
  dirs+=("$tmp/$n")
done

# The text: every fortune file (not the .dat indexes nor the .u8 links), in name order, repeated
# until it holds at least MB megabytes.
find "$fortunes" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' -print0 | sort -z | xargs -0 cat > "$tmp/once.txt"
size=$(wc -c < "$tmp/once.txt")
reps=1
if [ $# -eq 1 ]; then reps=$(( ($1 * 1000000 + size - 1) / size )); fi
for _ in $(seq "$reps"); do cat "$tmp/once.txt"; done > "$tmp/text.txt"

echo "== ftlua"
"$ftlua" "$root/scripts/bench/tokenizer_speed.lua" --text "$tmp/text.txt" "${dirs[@]}" | tee "$tmp/ftlua.log"
echo "== node @huggingface/tokenizers"
"$node" "$root/scripts/bench/tokenizer_speed_node.mjs" --text "$tmp/text.txt" "${dirs[@]}" | tee "$tmp/node.log"

echo
awk '
  /^RESULT / {
    delete r
    for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
    k = FILENAME ~ /ftlua\.log$/ ? "ftlua" : "node"
    load[k, r["tokenizer"]] = r["load_s"]; mbs[k, r["tokenizer"]] = r["bytes"] / 1e6 / r["encode_s"]
    tokens[k, r["tokenizer"]] = r["tokens"]; mb = r["bytes"] / 1e6
    if (!(r["tokenizer"] in seen)) { seen[r["tokenizer"]] = 1; order[++n] = r["tokenizer"] }
  }
  END {
    printf "single-thread encode, %.2f MB of fortunes, no special tokens\n", mb
    printf "%-9s %11s %11s %11s %11s %11s %11s  %s\n", "tokenizer", "load ftlua", "load node",
      "load ratio", "ftlua MB/s", "node MB/s", "MB/s ratio", "tokens"
    bad = 0
    for (i = 1; i <= n; i++) {
      t = order[i]
      if (!(("ftlua", t) in load) || !(("node", t) in load)) { printf "%-9s missing a result\n", t; bad = 1; continue }
      same = tokens["ftlua", t] == tokens["node", t]
      printf "%-9s %9.3f s %9.3f s %11.2f %11.2f %11.2f %11.2f  %s\n", t, load["ftlua", t], load["node", t],
        load["ftlua", t] / load["node", t], mbs["ftlua", t], mbs["node", t], mbs["ftlua", t] / mbs["node", t],
        same ? tokens["node", t] " (same)" : "DIFFERENT: ftlua " tokens["ftlua", t] ", node " tokens["node", t]
      if (!same) bad = 1
    }
    print "ratios are ftlua/node: load time (below 1: ftlua loads faster), MB/s (above 1: ftlua encodes faster)"
    exit bad
  }' "$tmp/ftlua.log" "$tmp/node.log" || die "ftlua and node disagree (see the table)"
