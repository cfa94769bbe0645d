#!/usr/bin/env bash
# Packs what the H200 device image lacks into .whl/ (read by benchmarks/h200_session.sh), within one call's 64 MiB:
#   bash benchmarks/device_bundle.sh
# The device has torch 2.11, transformers, numpy, scipy, opencv, PIL, yaml, safetensors and huggingface_hub, but no
# diffusers, PyAV, FlashAttention-3, pyloudnorm, soundfile or ftfy. Their wheels come to ~70 MB: installed with
# pip --target (diffusers without its pipelines/ subpackages, which MOVA never imports) and packed with xz they are
# ~37 MB (.whl/site.tar.xz). With fa3-fwd the archive and the tracked tree (~29 MB) pass the carry limit, so it is
# packed only when asked (FA3=1 bash benchmarks/device_bundle.sh, for the speed runs; the memory runs need none).
# PyAV is 36 MB of the wheels: AV=0 leaves it out, which makes room for FA3, for the runs that never build a
# MOVAPipeline (mova.pipeline imports mova.media, which imports PyAV: aot_check and clip_time need it).
# AOT=1 adds the spaces package and the pydantic it imports (the AoT runs: benchmarks/aot_check.py, clip_time --aot),
# as wheels beside the archive (pydantic-core's for the device's Python 3.12).
# cffi (soundfile's C binding) has wheels per Python: those for 3.11 and 3.12 sit beside the archive and the
# session script installs the one that fits (the device runs Python 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pip download -q --no-deps -d "$work/wheels" diffusers==0.42.1 importlib_metadata $([ "${AV:-1}" = 1 ] && echo av==18.1.0) \
  pyloudnorm==0.2.0 soundfile==0.14.0 ftfy==6.3.1 wcwidth $([ "${FA3:-0}" = 1 ] && echo fa3-fwd)
pip install -q --no-index --no-deps --no-compile --target "$work/site" "$work"/wheels/*.whl
find "$work/site/diffusers/pipelines" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
mkdir -p .whl
XZ_OPT=-9e tar -cJf .whl/site.tar.xz -C "$work/site" .  # -9e: 0.7 MB smaller, which AV=1 FA3=1 needs to fit
for py in 3.11 3.12; do
  pip download -q --no-deps --only-binary=:all: --python-version "$py" -d .whl cffi
done
pip download -q --no-deps -d .whl pycparser
if [ "${AOT:-0}" = 1 ]; then  # spaces' imports: pydantic (pinned with the pydantic-core it needs) and its helpers
  pip download -q --no-deps -d .whl spaces==0.51.3 pydantic==2.12.5 annotated_types typing_inspection
  pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d .whl pydantic_core==2.41.5
fi
du -sh .whl
