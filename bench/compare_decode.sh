#!/usr/bin/env bash
# Input-pipeline speed against libjpeg-turbo's own decoder benchmark (tjbench), on the
# same JPEG files, per thread: cxr's decode + resize + flip + normalize (bench_data's
# decode+pipeline) next to tjbench's decode-only rate, with and without DCT scaling, so
# the table shows where the speed comes from. PNG rates (no tjbench equivalent) and the
# threaded Loader are listed too.
#
#   bench/compare_decode.sh [build-dir] [image-dir]
#     env: COUNT=64 SIZE=1024 (generated images), OUT=224 (pipeline output size),
#          THREADS=$(nproc), ITERS=5, ROUNDS=1, TJ_FILES=16 (JPEGs timed by tjbench),
#          TJ_TIME=0.5 (tjbench -benchtime per file), PYTHON=python3
#
# Without image-dir, COUNT synthetic radiograph-like images of SIZE x SIZE are generated
# (bench_data --make-jpegs: gray and RGB JPEGs at quality 90, gray and RGB PNGs) in a
# temporary folder. An image-dir must hold gray_jpeg/, rgb_jpeg/ and optionally gray_png/
# and rgb_png/ (any of them may be missing).
#
# tjbench (Debian libjpeg-turbo-progs) is run as `tjbench FILE.jpg -benchtime T -warmup W
# -nowrite -quiet [-scale 1/N] [-rgb]`: decompression of an existing JPEG only, one thread,
# accurate (islow) IDCT and fancy upsampling like cxr's decoder; it reports megapixels/s of
# the source image, turned here into images/s over the same files (n / sum of per-file
# times). A gray JPEG is decompressed by tjbench to 3-byte BGR (it has no gray output
# format), a little more work than cxr's 1-channel decode.
set -euo pipefail
BUILD=${1:-build}
DIR=${2:-}
COUNT=${COUNT:-64}
SIZE=${SIZE:-1024}
OUT=${OUT:-224}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-5}
ROUNDS=${ROUNDS:-1}
TJ_FILES=${TJ_FILES:-16}
TJ_TIME=${TJ_TIME:-0.5}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
BIN="$BUILD/bench/bench_data"
[ -x "$BIN" ] || { echo "error: $BIN not found; build it first (cmake --build $BUILD --target bench_data)" >&2; exit 1; }
command -v tjbench >/dev/null || { echo "error: tjbench not found (Debian: apt-get install libjpeg-turbo-progs)" >&2; exit 1; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if [ -z "$DIR" ]; then
  DIR="$TMP/images"
  "$BIN" --make-jpegs "$DIR" --count "$COUNT" --size "$SIZE" --quality 90 >&2
fi

echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  nproc=$(nproc)  threads=$THREADS  load=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "# cxr $(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo '?')  $(tjbench 2>&1 | grep -m1 -io 'libjpeg-turbo [0-9.]*' || dpkg-query -W -f='libjpeg-turbo ${Version}' libjpeg-turbo-progs 2>/dev/null || true)"
echo "# images: $DIR  output ${OUT}x${OUT}, hflip on, iters $ITERS, rounds $ROUNDS, tjbench on $TJ_FILES files x ${TJ_TIME}s"

# tjbench over the first TJ_FILES JPEGs of a folder; prints one JSON line.
tj() {  # folder, scale (1/1, 1/2, ...), extra flags
  local dir=$1 scale=$2; shift 2
  local lines=""
  local files=("$dir"/*.jpg)
  for f in "${files[@]:0:$TJ_FILES}"; do
    lines+="$(tjbench "$f" -benchtime "$TJ_TIME" -warmup 0.2 -nowrite -quiet -scale "$scale" "$@" | awk 'NF >= 8 && $(NF-3) ~ /^[0-9]+$/ {print $(NF-4), $(NF-3), $NF}' | tail -n 1)"$'\n'
  done
  "$PYTHON" - "$scale" "$lines" <<'PY'
import json, sys
scale, text = sys.argv[1], sys.argv[2]
rows = [l.split() for l in text.splitlines() if l.strip()]
secs = sum(int(w) * int(h) / 1e6 / float(r) for w, h, r in rows)
pix = sum(int(w) * int(h) for w, h, r in rows)
print(json.dumps({"mode": "tjbench", "scale": scale, "files": len(rows), "images_per_s": len(rows) / secs,
                  "mpix_per_s": pix / 1e6 / secs}))
PY
}

RESULTS="$TMP/results.jsonl"
: > "$RESULTS"
for ((r = 0; r < ROUNDS; r++)); do
  for kind in gray_jpeg rgb_jpeg gray_png rgb_png; do
    [ -d "$DIR/$kind" ] || continue
    ch=1; tjflags=(); [ "${kind%%_*}" = rgb ] && { ch=3; tjflags=(-rgb); }
    for dct in yes no; do
      flags=(); [ $dct = no ] && flags=(--no-dct-scaling)
      "$BIN" --dir "$DIR/$kind" --size "$OUT" --channels $ch --threads "$THREADS" --hflip --iters "$ITERS" "${flags[@]}" |
        sed "s/^{/{\"kind\": \"$kind\", \"round\": $r, /" >> "$RESULTS"
    done
    if [ "${kind#*_}" = jpeg ]; then
      # The DCT scale cxr's decoder picked (source width / decoded width), for tjbench -scale.
      denom=$("$PYTHON" -c '
import json, sys
d = next(r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == sys.argv[2] and r.get("dct_scaling"))
print(int(d["source"].split("x")[0]) // int(d["decoded"].split("x")[0]))' "$RESULTS" "$kind")
      for scale in 1/1 "1/$denom"; do
        [ "$scale" = "1/1" ] || [ "$denom" != 1 ] || continue
        tj "$DIR/$kind" "$scale" "${tjflags[@]}" | sed "s/^{/{\"kind\": \"$kind\", \"round\": $r, /" >> "$RESULTS"
      done
    fi
  done
done

"$PYTHON" - "$RESULTS" "$THREADS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
threads = int(sys.argv[2])
def rate(kind, mode, threads=1, dct=None, scale=None):
    v = [r["images_per_s"] for r in rows if r["kind"] == kind and r["mode"] == mode
         and (threads is None or r.get("threads", 1) == threads)
         and (dct is None or r.get("dct_scaling") == dct) and (scale is None or r.get("scale") == scale)]
    return statistics.median(v) if v else None
def f(x): return f"{x:8.1f}" if x is not None else "     n/a"
def ratio(a, b): return f"{a / b:5.2f}" if a and b else "  n/a"
for kind in ("gray_jpeg", "rgb_jpeg"):
    if not any(r["kind"] == kind for r in rows): continue
    one = next(r for r in rows if r["kind"] == kind and r.get("dct_scaling") is True)
    scaled = next((r["scale"] for r in rows if r["kind"] == kind and r["mode"] == "tjbench" and r["scale"] != "1/1"), None)
    tj_full, tj_scaled = rate(kind, "tjbench", None, scale="1/1"), rate(kind, "tjbench", None, scale=scaled) if scaled else None
    print(f"\n## {kind}: {one['files']} files of {one['source']}, cxr output {one['size']}x{one['size']}x{one['channels']} "
          f"(DCT scaling decodes at {one['decoded']}); images/s on ONE thread")
    print(f"| {'measurement':<50} | {'img/s':>8} | {'vs tjbench 1/1':>14} | {'vs tjbench ' + (scaled or '-'):>14} |")
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 16}|{'-' * 16}|")
    print(f"| {'tjbench decode only, full size (1/1)':<50} | {f(tj_full)} | {ratio(tj_full, tj_full):>14} | {'':>14} |")
    if scaled:
        print(f"| {'tjbench decode only, DCT-scaled (' + scaled + ')':<50} | {f(tj_scaled)} | {ratio(tj_scaled, tj_full):>14} | {ratio(tj_scaled, tj_scaled):>14} |")
    for dct, label in ((False, "no DCT scaling"), (True, "DCT scaling")):
        for mode, what in (("decode", "cxr decode only"), ("decode+pipeline", "cxr decode+resize+flip+normalize")):
            x = rate(kind, mode, 1, dct)
            print(f"| {what + ', ' + label:<50} | {f(x)} | {ratio(x, tj_full):>14} | {ratio(x, tj_scaled) if dct else '':>14} |")
print(f"\n## all formats: images/s, 1 thread and {threads} threads (per-thread rate in brackets)")
print(f"| {'format':<10} | {'measurement':<34} | {'1 thread':>9} | {str(threads) + ' threads':>20} |")
print(f"|{'-' * 12}|{'-' * 36}|{'-' * 11}|{'-' * 22}|")
for kind in ("gray_jpeg", "rgb_jpeg", "gray_png", "rgb_png"):
    if not any(r["kind"] == kind for r in rows): continue
    for dct in ((True, False) if kind.endswith("jpeg") else (True,)):
        for mode in ("decode", "decode+pipeline", "loader"):
            a, b = rate(kind, mode, 1, dct), rate(kind, mode, threads, dct)
            label = mode + ("" if kind.endswith("png") else (", DCT" if dct else ", no DCT"))
            nb = f"{f(b)} ({b / threads:6.1f})" if b else "n/a"
            print(f"| {kind:<10} | {label:<34} | {f(a):>9} | {nb:>20} |")
PY
