"""bench_peers' results, shared with conftest's end-of-run summary: the side-by-side table."""
import torch

RESULTS: dict[tuple, dict] = {}  # (loop, dtype, length, documents, system) -> the run's measures
STARTS: dict[tuple, float] = {}  # (system, dtype) -> engine start seconds


def summary_lines() -> list[str]:
    """Each cell's two systems and grumem's speed-up over vLLM (vLLM's loop seconds / grumem's)."""
    if not RESULTS:
        return []
    lines = [f"processor: {processor()}; engine start: " + ", ".join(
        f"{system} {dtype} {seconds:.1f} s" for (system, dtype), seconds in sorted(STARTS.items()))]
    lines.append(f"{'loop':9s} {'dtype':9s} {'length':>6s} {'docs':>4s} {'system':7s} {'wall s':>8s} {'tok/s':>7s} "
                 f"{'prompt':>8s} {'gen':>6s} {'cached':>7s} {'acc':>5s} {'x floor':>7s} {'grumem/vllm':>11s}")
    for cell, r in RESULTS.items():
        loop, dtype, length, documents, system = cell
        vllm = RESULTS.get((*cell[:4], "vllm"))
        ratio = f"{vllm['seconds'] / r['seconds']:.2f}x" if system == "grumem" and vllm else ""
        lines.append(f"{loop:9s} {dtype:9s} {length:6d} {documents:4d} {system:7s} {r['seconds']:8.1f} "
                     f"{r['tokens_per_s']:7.0f} {r['prompt_tokens']:8d} {r['generated_tokens']:6d} "
                     f"{r['cached_tokens']:7d} {r['accuracy']:5.2f} {r['seconds'] / r['floor_s']:7.1f} {ratio:>11s}")
    return lines


def processor() -> str:
    """The CPU's name and its vector ISA as torch sees it (figures differ between AVX2 and AVX-512 machines)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'} x {len(names)}, {torch.backends.cpu.get_cpu_capability()}"
