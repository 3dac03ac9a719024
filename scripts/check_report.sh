#!/usr/bin/env bash
# Renders an HTML report (`cxr train` / `cxr eval --html`) with headless Chromium and
# checks the screenshot: the PNG must exist, decode, and show a page (many distinct
# colours, a fair share of non-background pixels), not a blank or an error page.
#
#   scripts/check_report.sh REPORT.html [OUT.png]     (OUT defaults to REPORT.png)
#
# Exit codes: 0 rendered and not blank (prints the PNG path); 1 rendering failed or the
# screenshot is blank; 2 bad usage or no such report; 77 Chromium is not installed (the
# test suite counts that as a skip). CHROMIUM=/path/to/browser picks another binary.
set -euo pipefail

usage() { echo "usage: $0 REPORT.html [OUT.png]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
report=$1
[[ -f $report ]] || { echo "check_report.sh: $report: no such file" >&2; exit 2; }
out=${2:-${report%.html}.png}

browser=${CHROMIUM:-}
if [[ -z $browser ]]; then
  browser=$(command -v chromium || command -v chromium-browser || true)
fi
if [[ -z $browser || ! -x $browser ]]; then
  echo "check_report.sh: Chromium not found (${CHROMIUM:+CHROMIUM=$CHROMIUM is not executable; }looked for chromium, chromium-browser)." >&2
  echo "Install it with: apt-get update && apt-get install -y chromium" >&2
  exit 77
fi

abs=$(cd "$(dirname "$report")" && pwd)/$(basename "$report")
if command -v python3 >/dev/null; then
  url=$(python3 -c 'import pathlib, sys; print(pathlib.Path(sys.argv[1]).as_uri())' "$abs")
else
  url="file://$abs"
fi

profile=$(mktemp -d "${TMPDIR:-/tmp}/cxr_report_chromium.XXXXXX")
trap 'rm -rf "$profile"' EXIT
mkdir -p "$(dirname "$out")"
rm -f "$out"
# A fresh profile per run: concurrent runs never share a lock, and nothing is read from $HOME.
if ! timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$profile" --screenshot="$out" --window-size=1200,3000 "$url" >"$profile/log" 2>&1; then
  echo "check_report.sh: $browser failed to render $report:" >&2
  tail -n 20 "$profile/log" >&2
  exit 1
fi
if [[ ! -s $out ]]; then
  echo "check_report.sh: no screenshot written to $out" >&2
  tail -n 20 "$profile/log" >&2
  exit 1
fi

if ! command -v python3 >/dev/null; then
  # Without python3, fall back on size: a blank 1200x3000 page compresses to a few KiB.
  size=$(stat -c %s "$out")
  if (( size < 20000 )); then echo "check_report.sh: $out is only $size bytes: a blank page?" >&2; exit 1; fi
  echo "$out"
  exit 0
fi

python3 - "$out" <<'PY'
# Decodes the PNG (8-bit greyscale/RGB/RGBA, not interlaced) with zlib and undoes the
# scanline filters, then counts the colours.
import struct, sys, zlib

path = sys.argv[1]
data = open(path, "rb").read()
if data[:8] != b"\x89PNG\r\n\x1a\n":
    sys.exit(f"check_report.sh: {path} is not a PNG file")
pos, idat, ihdr = 8, [], None
while pos + 8 <= len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    pos += 12 + n
    if kind == b"IHDR":
        ihdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat.append(body)
    elif kind == b"IEND":
        break
if ihdr is None:
    sys.exit(f"check_report.sh: {path} has no IHDR chunk")
w, h, depth, ctype, _, _, interlace = ihdr
channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
if depth != 8 or channels is None or interlace:
    sys.exit(f"check_report.sh: {path}: unsupported PNG (bit depth {depth}, colour type {ctype}, interlace {interlace})")
raw = zlib.decompress(b"".join(idat))
stride = w * channels
if len(raw) != h * (stride + 1):
    sys.exit(f"check_report.sh: {path}: {len(raw)} bytes of image data, expected {h * (stride + 1)}")

prev = bytearray(stride)
colours, sampled = {}, 0
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if f == 1:
        for i in range(channels, stride):
            line[i] = (line[i] + line[i - channels]) & 255
    elif f == 2:
        line = bytearray((a + b) & 255 for a, b in zip(line, prev))
    elif f == 3:
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            line[i] = (line[i] + (left + prev[i]) // 2) & 255
    elif f == 4:
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], (prev[i - channels] if i >= channels else 0)
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    elif f != 0:
        sys.exit(f"check_report.sh: {path}: bad filter type {f} on row {y}")
    prev = line
    if y % 2 == 0:
        for x in range(0, w, 2):
            px = bytes(line[x * channels:(x + 1) * channels])
            colours[px] = colours.get(px, 0) + 1
            sampled += 1

background, count = max(colours.items(), key=lambda kv: kv[1])
inked = 1 - count / sampled
print(f"{path}: {w}x{h}, {len(colours)} distinct colours, {100 * inked:.1f}% of pixels differ from the background")
if len(colours) < 16 or inked < 0.01:
    sys.exit(f"check_report.sh: {path} looks blank ({len(colours)} colours, {100 * inked:.2f}% non-background)")
PY
echo "$out"
