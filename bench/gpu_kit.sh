#!/usr/bin/env bash
# Prepares, on a machine with pip, what bench/gpu_check.sh needs on the device tool's GPU machine, whose image
# (Python 3.12, torch 2.11, transformers 5.17, huggingface_hub 1.33; KINDS.md of the device tool) lacks some of
# requirements.txt:
#   .whl/         the missing packages as Python 3.12 x86-64 wheels (~8 MB)
#   .gpu-shared/  the official key table (the rehearsal writes its random weights from it; ../shared does not travel)
# Both are git-ignored and travel as `carry`. Then, in one device call:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".gpu-shared"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CODI_SHARED:-../shared}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
rm -rf .whl && mkdir -p .whl
# the versions this project's CI uses; `--no-deps`: each need the image lacks is named. Not huggingface_hub 2.x:
# the image's transformers 5.17 refuses it at import (it wants <2.0), and codi runs on the image's 1.33 (its tests
# of the Hub code pass on 1.33; codi.hub imports httpx2, which is carried)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 \
  soundfile==0.14.0 cffi==2.0.0 pycparser==3.0
mkdir -p .gpu-shared/official-parity
cp "$shared/official-parity/official_state_dict_keys.tsv" .gpu-shared/official-parity/
du -sh .whl .gpu-shared
ls .whl
