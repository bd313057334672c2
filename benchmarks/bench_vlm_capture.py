"""Scenario 5 benchmark: vizkit's per-token attention capture during ``generate`` vs plain
``generate`` vs ``generate(output_attentions=True)`` (what the seed, LVLM-Interpret and
VLM-Visualizer do), on one random Qwen2-VL (``--family llava_next``: an anyres LLaVA-NeXT, tiles +
base image) saved by its own model and processor classes (tests/helpers/vlm_folders.py) to a temp dir
and loaded from it.

Default model (issue 19): 8 decoder layers, hidden 512 (8 heads, 4 KV heads), a 4-block vision
tower, 2 images at 448 px (grid 32 x 32 patches -> 16 x 16 = 256 tokens each after the 2x2
merge), 128 new tokens (``min_new_tokens`` too, so every run generates exactly 128).

- ``plain``: ``model.generate(...)`` (sdpa, KV cache);
- ``output_attentions``: the model switched to eager, ``generate(output_attentions=True,
  return_dict_in_generate=True)`` -- every layer's and head's attention of every step kept;
- ``vizkit``: ``with RowAttentionCapture([(name, layer)], rows="last"): model.generate(...)`` --
  one layer, every head, only the new row per step.

Times: ``--repeats`` round-robin calls after a warm-up, min / median / max. Peak memory: one
fresh process per method (benchlib.peak_memory), the extra MiB above model + inputs.
Targets (issue 26): vizkit <= 1.05x plain's peak memory and <= 1.1x its time. Also checked: the captured
rows equal the eager ``output_attentions`` rows (max abs difference) and the generated tokens
are the same. Exit code 0 whether targets are met or not.

    .venv/bin/python benchmarks/bench_vlm_capture.py             # ~2-3 min on 2 cores
    .venv/bin/python benchmarks/bench_vlm_capture.py --quick     # 3 layers, hidden 128, 224 px, 32 tokens
    .venv/bin/python benchmarks/bench_vlm_capture.py --family llava_next
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "helpers"))  # the family folder builders

import numpy as np  # noqa: E402
import torch  # noqa: E402
from benchlib import measure_memory, peak_memory, print_worker_result, summary, time_round_robin  # noqa: E402

METHODS = ("plain", "output_attentions", "vizkit")
TARGET_MEMORY, TARGET_TIME = 1.05, 1.1


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--family", choices=("qwen2_vl", "llava_next"), default="qwen2_vl")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--capture-layer", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--_mem-worker", dest="mem_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.layers, args.hidden, args.image_size, args.new_tokens, args.capture_layer = 3, 128, 224, 32, 1
    return args


def build(args):
    import vlm_folders as VF
    from PIL import Image

    from vizkit.models.vlm import load_vlm
    from vizkit.models.vlm.trace import build_inputs

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="bench_vlm_"))
    common = dict(
        layers=args.layers,
        hidden=args.hidden,
        heads=8,
        kv_heads=4,
        vision_depth=4,
        vision_hidden=args.hidden // 2,
        seed=0,
    )
    if args.family == "qwen2_vl":
        VF.save_random_qwen2_vl(folder, max_pixels=args.image_size * args.image_size, **common)
    else:  # tiles of image_size / 2 from the anyres pinpoints + the base image
        VF.save_random_llava_next(folder, image_size=args.image_size // 2, patch=14, **common)
    vlm = load_vlm(folder)
    rng = np.random.default_rng(0)
    s = args.image_size
    images = [Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)) for _ in range(2)]
    inputs, _ = build_inputs(vlm, "Describe both images. Based on the following requirements, compare them.", images)
    inputs.pop("original_sizes")
    return vlm, inputs


def make_runners(vlm, inputs, args):
    from vizkit.hooks import RowAttentionCapture

    model = vlm.model
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    @torch.no_grad()
    def plain():
        return model.generate(**inputs, **kw)

    @torch.no_grad()
    def output_attentions():
        model.set_attn_implementation("eager")
        try:
            return model.generate(**inputs, **kw, output_attentions=True, return_dict_in_generate=True)
        finally:
            model.set_attn_implementation("sdpa")

    @torch.no_grad()
    def vizkit():
        block = vlm.decoder_layers[args.capture_layer]
        with RowAttentionCapture([("layer", block)], rows="last", heads="all") as cap:
            out = model.generate(**inputs, **kw)
        return out, cap.rows("layer").numpy()

    return {"plain": plain, "output_attentions": output_attentions, "vizkit": vizkit}


def main() -> int:
    args = parse_args()
    vlm, inputs = build(args)
    runners = make_runners(vlm, inputs, args)
    if args.mem_worker:
        run = runners[args.mem_worker]
        print_worker_result(args.mem_worker, peak_memory(run, run, vlm.model))
        return 0
    L = inputs["input_ids"].shape[1]
    print("=" * 78)
    grids = vlm.position_map(inputs).grids
    print(
        f"scenario 5 benchmark: random {vlm.family.name}, {args.layers} decoder layers, hidden {args.hidden}, 8 heads, "
        f"2 images at {args.image_size} px (patch grids {grids}), prompt {L} tokens, "
        f"{args.new_tokens} new tokens, capture layer {args.capture_layer}, threads {args.threads}, "
        f"repeats {args.repeats}, loadavg {os.getloadavg()[0]:.2f}"
    )
    print("=" * 78)
    seq_plain = runners["plain"]()
    seq_viz, rows = runners["vizkit"]()
    ref = runners["output_attentions"]()
    same = torch.equal(seq_plain, seq_viz) and torch.equal(seq_plain, ref.sequences)
    diff = max(
        float(np.abs(rows[j, :, : a[args.capture_layer].shape[-1]] - a[args.capture_layer][0, :, -1].numpy()).max())
        for j, a in enumerate(ref.attentions)
    )
    print(f"same generated tokens in all three: {same}; max |captured row - eager output_attentions row| = {diff:.1e}")
    print(
        f"captured rows: {rows.shape} float32 = {rows.nbytes / 2**20:.1f} MiB; output_attentions keeps "
        f"{sum(t.numel() for a in ref.attentions for t in a) * 4 / 2**20:.0f} MiB"
    )
    del ref
    times = time_round_robin(runners, args.repeats)
    med = {m: statistics.median(v) for m, v in times.items()}
    for m in METHODS:
        print(f"  {m:<18} min / median / max = {summary(times[m])}")
    r = med["vizkit"] / med["plain"]
    print(
        f"time: vizkit / plain = {r:.2f}x (target <= {TARGET_TIME}x) {'PASS' if r <= TARGET_TIME else 'MISS'}; "
        f"output_attentions / vizkit = {med['output_attentions'] / med['vizkit']:.2f}x"
    )
    if not args.no_memory:
        flags = [
            "--family",
            args.family,
            "--layers",
            str(args.layers),
            "--hidden",
            str(args.hidden),
            "--image-size",
            str(args.image_size),
            "--new-tokens",
            str(args.new_tokens),
            "--capture-layer",
            str(args.capture_layer),
            "--threads",
            str(args.threads),
        ]
        mem = measure_memory(__file__, flags, METHODS)
        for m in METHODS:
            res = mem[m]
            print(
                f"  peak memory {m:<18}: "
                + (
                    f"extra {res['delta_mb']:7.1f} MiB, total {res['peak_mb']:7.1f} MiB"
                    if "error" not in res
                    else res["error"]
                )
            )
        if all("error" not in mem[m] for m in METHODS):
            rt = mem["vizkit"]["peak_mb"] / mem["plain"]["peak_mb"]
            print(
                f"memory (process peak): vizkit / plain = {rt:.3f}x (target <= {TARGET_MEMORY}x) "
                f"{'PASS' if rt <= TARGET_MEMORY else 'MISS'}; output_attentions / vizkit = "
                f"{mem['output_attentions']['peak_mb'] / mem['vizkit']['peak_mb']:.2f}x"
            )
            print(
                f"memory (extra above model + inputs): vizkit / plain = "
                f"{mem['vizkit']['delta_mb'] / max(mem['plain']['delta_mb'], 1e-9):.2f}x; output_attentions / "
                f"vizkit = {mem['output_attentions']['delta_mb'] / max(mem['vizkit']['delta_mb'], 1e-9):.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
