#!/usr/bin/env bash
# The one device call of a session lent a GPU (prepare with bench/gpu_kit.sh first):
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".gpu-shared"], timeout_s=600)
# 1. installs the carried wheels the image lacks (into /tmp/site, on PYTHONPATH);
# 2. without an ffmpeg there (imageio-ffmpeg's 70 MB binary cannot travel), video files are not encoded: a stand-in
#    takes the frames and writes an empty video.mp4 (the figures are the pipeline's call, which excludes writing);
# 3. tests/test_cuda.py (the tiny model's outputs on the GPU), then bench/official_gpu.py (the released model
#    rehearsed at full size, float16, 50 DDIM steps: seconds and peak VRAM per case; the uncompiled cases first).
# Everything lands in $OUT (env.txt, test_cuda.txt, gpu.txt, gpu.json). GPU_BENCH_S caps the benchmark (default
# 420 s; the writing of the 11.6 GB rehearsal cache comes out of it), GPU_BENCH_ARGS adds its options.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/codi-gpu}
py=${PYTHON:-python3}  # the interpreter with torch (the image's python3)
mkdir -p "$out"
wheels=${GPU_WHEELS:-.whl}
if ls "$wheels"/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$wheels"/*.whl \
    || { echo "installing the carried wheels failed" | tee "$out/env.txt"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -d .gpu-shared ] && export CODI_SHARED=${CODI_SHARED:-$PWD/.gpu-shared}
if ! "$py" -c "import imageio_ffmpeg" 2>/dev/null; then
  stub=/tmp/codi-ffmpeg-stub
  mkdir -p "$stub/imageio_ffmpeg"
  printf '#!/bin/sh\n# no ffmpeg on this machine: take the frames, leave an empty file\ncat >/dev/null\nfor a; do last=$a; done\n: > "$last"\n' > "$stub/ffmpeg"
  chmod +x "$stub/ffmpeg"
  printf 'def get_ffmpeg_exe():\n    return "%s/ffmpeg"\n' "$stub" > "$stub/imageio_ffmpeg/__init__.py"
  export PYTHONPATH=$stub:$PYTHONPATH
  echo "no imageio-ffmpeg here: video files are not encoded (stand-in at $stub)" >> "$out/env.txt"
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  "$py" -c "import torch, transformers, diffusers, huggingface_hub as h; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| diffusers', diffusers.__version__, '| hub', h.__version__)"
} 2>&1 | tee -a "$out/env.txt"
timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$out/test_cuda.txt"
timeout "${GPU_BENCH_S:-420}" "$py" bench/official_gpu.py --json "$out/gpu.json" ${GPU_BENCH_ARGS:-} 2>&1 \
  | tee "$out/gpu.txt"
echo "bench exit: $?" | tee -a "$out/gpu.txt"
