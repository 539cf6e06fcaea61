"""bench_peers' results, shared with conftest's end-of-run summary: the side-by-side table."""
import torch

RESULTS: dict[tuple, list[dict]] = {}  # (loop, dtype, length, documents, system) -> each round's measures
STARTS: dict[tuple, float] = {}  # (system, dtype) -> engine start seconds


def summary_lines() -> list[str]:
    """Per cell and system, the median round (wall time with the rounds' spread) and grumem's speed-up over vLLM:
    the ratio of medians, with the range of the per-round ratios (round i of one system against round i of the
    other, run back to back)."""
    if not RESULTS:
        return []
    lines = [f"processor: {processor()}; engine start: " + ", ".join(
        f"{system} {dtype} {seconds:.1f} s" for (system, dtype), seconds in sorted(STARTS.items()))]
    lines.append(f"{'loop':9s} {'dtype':9s} {'length':>6s} {'docs':>4s} {'system':7s} {'wall s (spread)':>19s} "
                 f"{'tok/s':>6s} {'prompt':>7s} {'gen':>6s} {'cached':>7s} {'acc':>5s} {'x floor':>7s} "
                 f"{'grumem/vllm (range)':>20s}")
    for key, rounds in RESULTS.items():
        loop, dtype, length, documents, system = key
        r = median_round(rounds)
        seconds = sorted(x["seconds"] for x in rounds)
        spread = f"{r['seconds']:.1f} ({seconds[0]:.0f}-{seconds[-1]:.0f})"
        ratio, vllm = "", RESULTS.get((*key[:4], "vllm"))
        if system == "grumem" and vllm:
            per_round = sorted(v["seconds"] / g["seconds"] for g, v in zip(rounds, vllm))
            ratio = f"{median_round(vllm)['seconds'] / r['seconds']:.2f}x ({per_round[0]:.2f}-{per_round[-1]:.2f})"
        lines.append(f"{loop:9s} {dtype:9s} {length:6d} {documents:4d} {system:7s} {spread:>19s} "
                     f"{r['tokens_per_s']:6.0f} {r['prompt_tokens']:7d} {r['generated_tokens']:6d} "
                     f"{r['cached_tokens']:7d} {r['accuracy']:5.2f} {r['seconds'] / r['floor_s']:7.1f} {ratio:>20s}")
    return lines


def median_round(rounds: list[dict]) -> dict:
    return sorted(rounds, key=lambda r: r["seconds"])[(len(rounds) - 1) // 2]


def processor() -> str:
    """The CPU's name and its vector ISA as torch sees it (figures differ between AVX2 and AVX-512 machines)."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return f"{names[0] if names else 'unknown CPU'} x {len(names)}, {torch.backends.cpu.get_cpu_capability()}"
