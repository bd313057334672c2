"""How fast does the attention explorer redraw when a slider moves? (target: <= 100 ms after
the first computation, with no forward pass).

    .venv/bin/python benchmarks/bench_widgets.py [--samples 8] [--moves 60]

Prints the time of the one batched forward (the first computation) and the median / max time
of a redraw after moving a control (the map and its overlay encoded as the two PNGs the page
shows), plus the number of forward passes during the moves (must be 0). The time until the
browser shows them is measured by benchmarks/bench_ui_latency.py.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--moves", type=int, default=60)
    args = parser.parse_args()

    from vizkit.models import SimpleViT
    from vizkit.scenarios.vit_mnist_attention import AttentionExplorer, AttentionVisualizer

    torch.manual_seed(0)
    try:
        visualizer = AttentionVisualizer(device="cpu")
        visualizer.load_optimal_model()
        source = "zoo:mnist_vit"
    except Exception:  # no zoo checkpoint yet: the same architecture with random weights
        visualizer = AttentionVisualizer(SimpleViT().eval(), device="cpu")
        source = "SimpleViT (random weights)"
    samples = visualizer.get_test_samples(args.samples)
    start = time.perf_counter()
    cache = visualizer.analyze(samples)
    first = time.perf_counter() - start

    forwards = []
    visualizer.model.register_forward_pre_hook(lambda *a: forwards.append(1))
    explorer = AttentionExplorer(cache)
    controls = [
        (explorer.layer, list(range(len(cache.layers)))),  # 0-based
        (explorer.head, [-1] + list(range(cache.num_heads))),
        (explorer.sample, list(range(len(samples)))),
        (explorer.fusion, ["mean", "max", "min"]),
    ]
    times = []
    for k in range(args.moves):
        control, values = controls[k % len(controls)]
        value = values[(values.index(control.value) + 1) % len(values)]
        t = time.perf_counter()
        control.value = value  # redraws through the observer: the map and overlay PNGs the page shows
        times.append(time.perf_counter() - t)
    med, worst = statistics.median(times) * 1e3, max(times) * 1e3
    print(f"model: {source}; {len(samples)} samples, {len(cache.layers)} layers x {cache.num_heads} heads")
    print(f"first computation (one batched forward + relevance): {first * 1e3:.0f} ms")
    print(
        f"redraw after a slider move: median {med:.1f} ms, max {worst:.1f} ms over {args.moves} moves "
        f"(target <= 100 ms: {'PASS' if med <= 100 else 'MISS'})"
    )
    print(f"forward passes during the moves: {len(forwards)} (target 0: {'PASS' if not forwards else 'MISS'})")


if __name__ == "__main__":
    main()
