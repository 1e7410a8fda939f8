#!/usr/bin/env python3
"""Turns the Google Benchmark JSON files of bench/run.sh into bench/RESULTS.md.

Each target of issues 6 (S4-family layers, Mamba) and 13 (Mamba-2) is a line: the figure, the reference it is measured against in the same
run (raw FFTW, the naive algorithm, the machine's FMA peak or memory bandwidth), the ratio, and
whether the target is met. A benchmark that did not run is reported as missing, never invented.
"""
import glob
import json
import os
import platform
import re
import sys

results = {}
context = {}


def canonical(name):
    """The name without the suffixes Google Benchmark adds for run options (UseRealTime, MinTime) and without
    roofline.hpp's namespace, so that targets are looked up by the benchmark's own name and arguments."""
    parts = [p for p in name.split("/") if p != "real_time" and not p.startswith("min_time:")]
    name = "/".join(parts)
    return name[len("ssm::bench::"):] if name.startswith("ssm::bench::") else name


for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    with open(path) as f:
        data = json.load(f)
    context = data.get("context", context)
    for b in data.get("benchmarks", []):
        if b.get("run_type") == "aggregate":
            continue
        # Of several repetitions keep the fastest: on a shared machine the slower ones measure the
        # neighbours. Every figure and its reference are chosen the same way.
        name = canonical(b["name"])
        if name not in results or b["real_time"] < results[name]["real_time"]:
            results[name] = b

UNIT = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def seconds(name):
    b = results.get(name)
    if b is None:
        return None
    return b["real_time"] * UNIT[b.get("time_unit", "ns")]


def counter(name, key):
    b = results.get(name)
    return None if b is None else b.get(key)


def fmt_v(v):
    """A counter's value, or "not run" when its benchmark is missing."""
    return "not run" if v is None else f"{v:g}"


def fmt_s(s):
    if s is None:
        return "not run"
    if s < 1e-6:
        return f"{s * 1e9:.1f} ns"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


rows = []


def target(what, figure, reference, ratio_text, met):
    if isinstance(met, str):
        status = met
    else:
        status = "missing" if met is None else ("met" if met else "**not met**")
    rows.append(f"| {what} | {figure} | {reference} | {ratio_text} | {status} |")


fma = counter("BM_Roofline_FmaPeak_f32", "FLOP/s")
fma_lanes = int(counter("BM_Roofline_FmaPeak_f32", "lanes") or 0)
# Memory roofline: one core streaming reads with wide vector loads (roofline.hpp); every executable measures it,
# so take the best of the runs.
bw_candidates = [b.get("bytes_per_second") for n, b in results.items()
                 if n.split("/")[0].endswith("BM_Roofline_MemoryRead") and b.get("bytes_per_second")]
bw = max(bw_candidates) if bw_candidates else None

# 1. FFT causal convolution vs raw FFTW.
ours = seconds("BM_CausalConv<float>/16384/256")
raw = seconds("BM_RawFFTW<float>/16384/256")
if ours and raw:
    target("FFT causal convolution, H=256, L=16384, fp32 (<= 1.3x raw FFTW)", fmt_s(ours), f"raw FFTW r2c+c2r {fmt_s(raw)}",
           f"{ours / raw:.2f}x", ours / raw <= 1.3)
else:
    target("FFT causal convolution, H=256, L=16384, fp32 (<= 1.3x raw FFTW)", fmt_s(ours), fmt_s(raw), "-", None)

# 2. DPLR (Cauchy) kernel.
# The naive (materialised Cauchy matrix) runs at H=32 to keep bench/run.sh short; its work is per channel,
# so it is scaled by 256/32 to the target's H.
dplr = seconds("BM_CauchyKernel<double>/256/64/16384/1")
naive32 = seconds("BM_CauchyKernelNaive<double>/32/64/16384")
naive = naive32 * 256 / 32 if naive32 else None
ctilde = seconds("BM_CauchyCTilde<double>/256/64/16384")
target("DPLR kernel, H=256, N=64, L=16384, rank 1, double, 1 thread (<= 60 ms)", fmt_s(dplr),
       f"materialised Cauchy matrix {fmt_s(naive)} (H=32 x 8); C_tilde for this L (not included) {fmt_s(ctilde)}",
       f"{naive / dplr:.1f}x faster" if dplr and naive else "-",
       None if dplr is None else dplr <= 0.060)

# 3. Vandermonde kernel.
vand = seconds("BM_VandermondeKernel<float>/256/64/16384/1")
vnaive = seconds("BM_VandermondeNaive<float>/256/64/16384")
if vand and fma:
    # The blocked form is one real GEMM per channel, (L/Bk x 2M) times (2M x Bk): 2M multiply-adds, i.e.
    # 4M flops, per tap (M = N/2 = 32 complex modes); the powers themselves are O(M (L/Bk + Bk)).
    flops = 256 * 32 * 16384 * 4.0
    ref = f"{flops / vand / 1e9:.1f} GFLOP/s of {fma / 1e9:.1f} FMA peak; repeated multiplication {fmt_s(vnaive)}"
    target("Vandermonde kernel, H=256, N=64, L=16384, fp32, 1 thread (<= 20 ms)", fmt_s(vand), ref,
           f"{flops / vand / fma:.0%} of peak", vand <= 0.020)
else:
    target("Vandermonde kernel, H=256, N=64, L=16384, fp32, 1 thread (<= 20 ms)", fmt_s(vand), "-", "-",
           None if vand is None else vand <= 0.020)

# 4. Selective scan.
s1 = seconds("BM_SelectiveScan<float>/1536/16/2048/1")
s2 = seconds("BM_SelectiveScan<float>/1536/16/2048/2")
work = 1536 * 16 * 2048
if s1:
    target("Selective scan, fp32, D=1536, N=16, L=2048, 1 thread (<= 0.4 ns per channel x state x step)",
           f"{s1 / work * 1e9:.3f} ns", "-", "-", s1 / work * 1e9 <= 0.4)
else:
    target("Selective scan, fp32, D=1536, N=16, L=2048, 1 thread (<= 0.4 ns per channel x state x step)", "not run", "-",
           "-", None)
target("Selective scan, 2 threads vs 1 (>= 1.8x)", fmt_s(s2), f"1 thread {fmt_s(s1)}",
       f"{s1 / s2:.2f}x" if s1 and s2 else "-", None if not (s1 and s2) else s1 / s2 >= 1.8)

# 5. Mamba block step at the 130m size: weights read once per token vs memory bandwidth.
step = seconds("BM_MambaStep<float>/768/16")
weight_bytes = counter("BM_MambaStep<float>/768/16", "weight_bytes")
if step and bw and weight_bytes:
    achieved = weight_bytes / step
    target("Mamba block step, d_model 768, d_state 16, fp32 (>= 70% of the memory roofline)", fmt_s(step),
           f"{achieved / 1e9:.1f} GB/s of {bw / 1e9:.1f} GB/s measured", f"{achieved / bw:.0%}", achieved / bw >= 0.7)
else:
    target("Mamba block step, d_model 768, d_state 16, fp32 (>= 70% of the memory roofline)", fmt_s(step), "-", "-", None)

# 6-8. Mamba-2 (issue 13). The SSD scan at the mamba2-130m shape: the recurrence against the chunked form.
# Every chunk size Q that ran is a candidate; the fastest is reported and named, with the default's figure
# (the Q that Mamba2::forward uses unless configured).
SSD_DEFAULT_Q = 64  # kSsdDefaultChunk, include/ssm/layers/ssd_scan.hpp
SSD_SHAPE = "mamba2-130m shape (nheads 24, headdim 64, dstate 128, ngroups 1, L=2048, fp32)"


def ssd_name(recurrent, q, threads):
    return f"BM_SsdScan<float>/recurrent:{recurrent}/Q:{q}/threads:{threads}"


ssd_rec = seconds(ssd_name(1, 64, 1))
ssd_chunked = {}
for n in results:
    m = re.fullmatch(r"BM_SsdScan<float>/recurrent:0/Q:(\d+)/threads:1", n)
    if m:
        ssd_chunked[int(m.group(1))] = seconds(n)
best_q = min(ssd_chunked, key=ssd_chunked.get) if ssd_chunked else None
ssd_best = ssd_chunked.get(best_q)
ssd_default = ssd_chunked.get(SSD_DEFAULT_Q)
what = f"SSD scan, {SSD_SHAPE}, chunked vs recurrence, 1 thread (>= 5x)"
if ssd_best and ssd_rec:
    default_ratio = f"{ssd_rec / ssd_default:.1f}x" if ssd_default else "not run"
    target(what, f"chunked, fastest Q={best_q}: {fmt_s(ssd_best)}; default Q={SSD_DEFAULT_Q}: {fmt_s(ssd_default)}",
           f"recurrence {fmt_s(ssd_rec)}", f"{ssd_rec / ssd_best:.1f}x (Q={SSD_DEFAULT_Q}: {default_ratio})",
           ssd_rec / ssd_best >= 5)
else:
    target(what, fmt_s(ssd_best), f"recurrence {fmt_s(ssd_rec)}", "-", None)

# The chunked form's FLOP rate (counter gflops: its multiply-adds x 2 per second, counted for the Q of the
# run) at the fastest Q, against the FMA peak. A larger Q does more flops, so the fastest run is not
# always the one with the highest rate; the rate of the run a user gets is the one that matters.
what = "SSD scan chunked, FLOP rate vs measured FMA peak, 1 thread (>= 40%)"
ssd_gflops = counter(ssd_name(0, best_q, 1), "gflops") if best_q is not None else None
ssd_gflops_default = counter(ssd_name(0, SSD_DEFAULT_Q, 1), "gflops")
if ssd_gflops and fma:
    default_rate = f"{ssd_gflops_default:.1f}" if ssd_gflops_default else "not run"
    target(what, f"{ssd_gflops:.1f} GFLOP/s (fastest Q={best_q})",
           f"FMA peak {fma / 1e9:.1f} GFLOP/s; default Q={SSD_DEFAULT_Q}: {default_rate} GFLOP/s",
           f"{ssd_gflops * 1e9 / fma:.0%} of peak", ssd_gflops * 1e9 / fma >= 0.4)
else:
    target(what, "not run" if ssd_gflops is None else f"{ssd_gflops:.1f} GFLOP/s",
           "-" if fma is None else f"FMA peak {fma / 1e9:.1f} GFLOP/s", "-", None)

# Mamba-2 step at the 130m size: bytes/s (every parameter array plus the state read and written, per step;
# a rotation of blocks that does not fit in cache) vs memory bandwidth, as the Mamba step above.
STEP2 = "BM_Mamba2Step<float>/d_model:768"
step2 = seconds(STEP2)
step2_rate = counter(STEP2, "bytes_per_second")
step2_weights = counter(STEP2, "weight_bytes")
what = "Mamba-2 step, d_model 768 (mamba2-130m block), fp32 (>= 70% of the memory roofline)"
if step2 and bw and step2_rate and step2_weights:
    per_step = step2_rate * step2
    target(what, fmt_s(step2),
           f"{step2_rate / 1e9:.1f} GB/s of {bw / 1e9:.1f} GB/s measured ({per_step / 1e6:.1f} MB per step: "
           f"{step2_weights / 1e6:.1f} MB weights + state read and written)",
           f"{step2_rate / bw:.0%}", step2_rate / bw >= 0.7)
else:
    target(what, fmt_s(step2), "-", "-", None)


# 9. Crossovers: the smallest L at which convolution (kernel generation included) beats recurrence, in the
# H=64, N=64 series (names BM_<layer>Conv<float>/L/H/N; other H or N are other experiments).
def series(prefix):
    out = {}
    for n in results:
        if n.startswith(prefix):
            args = n.split("/")[1:]
            if len(args) >= 3 and args[1] == "64" and args[2] == "64":
                out[int(args[0])] = seconds(n)
    return out


for layer in ("S4D", "S4", "LRU"):
    conv = series(f"BM_{layer}Conv<float>/")
    rec = series(f"BM_{layer}Recurrent<float>/")
    common = sorted(set(conv) & set(rec))
    cross = next((L for L in common if conv[L] < rec[L]), None)
    if common:
        detail = ", ".join(f"L={L}: {conv[L] / rec[L]:.2f}" for L in common)
        target(f"{layer} conv vs recurrent crossover (H=64, N=64, fp32)",
               f"conv faster from L = {cross}" if cross else "recurrence faster at every L measured", "conv/recurrent time",
               detail, "measured")
    else:
        target(f"{layer} conv vs recurrent crossover", "not run", "-", "-", None)

machine = context.get("host_name", platform.node())
cpus = context.get("num_cpus", "?")
mhz = context.get("mhz_per_cpu", "?")
print("# Benchmark results\n")
print(f"Machine: {platform.processor() or platform.machine()}, {cpus} CPUs at {mhz} MHz, {context.get('date', '')}. "
      f"Measured FMA peak (fp32, 1 core, {fma_lanes}-lane vectors, the widest this build uses): {fma / 1e9:.1f} GFLOP/s; "
      f"memory read bandwidth (1 core, four streams): "
      f"{bw / 1e9:.1f} GB/s." if fma and bw else "Machine line: roofline benchmarks missing.")
print("\nProduced by `bench/run.sh` (the release preset: Release, -march=native; every benchmark run with "
      "--benchmark_min_time=0.2 and three repetitions in random order, of which the fastest is reported; one thread "
      "unless the row says otherwise). Ratios compare figures from the same run; the machine is shared and noisy, so "
      "expect +-15%.\n")
print("| target | figure | reference (same run) | ratio | status |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    print(r)


# Further figures (no target): what a user of each mode can expect.
def rate(name, key="items_per_second"):
    v = counter(name, key)
    return "not run" if v is None else f"{v:,.0f}/s"


def speedup(one, two):
    """'two-thread time vs one-thread time: ratio'."""
    a, b = seconds(one), seconds(two)
    return f"{fmt_s(b)} vs {fmt_s(a)}: " + (f"{a / b:.2f}x" if a and b else "-")


FORWARD2 = "BM_Mamba2Forward<float>/d_model:768/L:2048/threads:{}"


extra = [
    ("Mamba block step, hot weights (one block, as cache-resident as 15 MB allows)", fmt_s(seconds("BM_MambaStepHot<float>/768/16"))),
    ("Mamba block forward, d_model 768, L=2048, 1 / 2 threads",
     f"{fmt_s(seconds('BM_MambaForward<float>/768/16/2048/1'))} / {fmt_s(seconds('BM_MambaForward<float>/768/16/2048/2'))}"),
    ("Mamba LM greedy decoding, d_model 256, 4 layers, vocab 1024 (tokens/s)", rate("BM_MambaLMTokens<float>/256/4/1024")),
    ("Mamba LM greedy decoding, mamba-130m shape: 768, 24 layers, vocab 50280 (tokens/s)",
     rate("BM_MambaLMTokens<float>/768/24/50280")),
    ("Heap allocations per Mamba block step / per LM token",
     f"{fmt_v(counter('BM_MambaStep<float>/768/16', 'allocations'))} / "
     f"{fmt_v(counter('BM_MambaLMTokens<float>/256/4/1024', 'allocations'))}"),
    ("S4D / S4 / LRU step, H=64, N=64, fp32 (channel-samples/s)",
     " / ".join(rate(f"BM_{l}Step<float>/64/64") for l in ("S4D", "S4", "LRU"))),
    ("Mamba-2 block forward, d_model 768, L=2048, 1 / 2 threads (prompt tokens/s)",
     f"{rate(FORWARD2.format(1))} / {rate(FORWARD2.format(2))}"),
    (f"SSD scan chunked (Q={SSD_DEFAULT_Q}), {SSD_SHAPE}, 2 threads vs 1",
     speedup(ssd_name(0, SSD_DEFAULT_Q, 1), ssd_name(0, SSD_DEFAULT_Q, 2))),
    ("Mamba-2 step, hot weights (one block, as cache-resident as 15 MB allows)",
     fmt_s(seconds("BM_Mamba2StepHot<float>/d_model:768"))),
    ("Heap allocations per Mamba-2 step", fmt_v(counter(STEP2, "allocations"))),
    ("Mamba-2 LM greedy decoding, mamba2-130m shape: 768, 24 layers, vocab 50280 (tokens/s)",
     rate("BM_Mamba2LMDecode<float>")),
    ("Mamba-2 LM prompt prefill, mamba2-130m shape, L=512 (MambaLM::prefill), 1 / 2 threads (tokens/s)",
     f"{rate('BM_Mamba2LMPrefill<float>/L:512/threads:1')} / {rate('BM_Mamba2LMPrefill<float>/L:512/threads:2')}"),
]
print("\n| other figure | value |")
print("| --- | --- |")
for what, value in extra:
    print(f"| {what} | {value} |")


# The GPL-free FFT backend (bench_fft_eigen, Eigen's kissfft) against FFTW, same run. Raw transforms at the same
# size in one binary; the convolution and the S4 kernel against the FFTW-backend lines of bench_fft / bench_kernels.
def backend_row(what, eigen_name, fftw_name, fftw_label):
    e, f = seconds(eigen_name), seconds(fftw_name)
    ratio = f"{e / f:.2f}x" if e and f else "-"
    return f"| {what} | {fmt_s(e)} | {fftw_label} {fmt_s(f)} | {ratio} |"


backend_rows = [
    backend_row(f"raw r2c + c2r, size for L={L}, H={H}, fp32", f"BM_EigenRawFFT<float>/{L}/{H}",
                f"BM_FFTWRawFFT<float>/{L}/{H}", "raw FFTW, same size")
    for L, H in ((1024, 256), (16384, 256), (131072, 32))
] + [
    backend_row("raw r2c + c2r, size for L=16384, H=256, fp64", "BM_EigenRawFFT<double>/16384/256",
                "BM_FFTWRawFFT<double>/16384/256", "raw FFTW, same size"),
    backend_row("FFT causal convolution, L=16384, H=256, fp32", "BM_EigenCausalConv<float>/16384/256",
                "BM_CausalConv<float>/16384/256", "FFTW backend"),
    backend_row("FFT causal convolution, L=131072, H=32, fp32", "BM_EigenCausalConv<float>/131072/32",
                "BM_CausalConv<float>/131072/32", "FFTW backend"),
    backend_row("FFT causal convolution, L=16384, H=256, fp64", "BM_EigenCausalConv<double>/16384/256",
                "BM_CausalConv<double>/16384/256", "FFTW backend"),
    backend_row("S4 DPLR kernel, H=256, N=64, L=16384, fp64", "BM_EigenCauchyKernel<double>/256/64/16384",
                "BM_CauchyKernel<double>/256/64/16384/1", "FFTW backend"),
]
print("\n| Eigen FFT backend (GPL-free), 1 thread | Eigen | FFTW (same run) | Eigen / FFTW |")
print("| --- | --- | --- | --- |")
for r in backend_rows:
    print(r)

# Batched decoding (issue 16): aggregate tokens/s of MambaLM::step_batch for B streams, against B = 1 and
# the FMA peak of the same run (target: B = 16 >= 8x B = 1).
batched = "BM_MambaLMBatchedTokens<float>/768/24/50280/{}"
one = counter(batched.format(1), "items_per_second")
print("\n| Mamba LM batched decoding, mamba-130m shape, 1 thread | aggregate tokens/s | vs B = 1 | FLOP rate vs FMA peak |")
print("| --- | --- | --- | --- |")
for B in (1, 4, 16, 64):
    r, flops = counter(batched.format(B), "items_per_second"), counter(batched.format(B), "flops")
    ratio = f"{r / one:.2f}x" if r and one else "-"
    if B == 16 and r and one:
        ratio += " (target >= 8x: " + ("met" if r / one >= 8 else "**not met**") + ")"
    share = f"{flops / 1e9:.1f} GFLOP/s, {100 * flops / fma:.0f}% of peak" if flops and fma else "-"
    print(f"| B = {B} | {'not run' if r is None else f'{r:,.1f}'} | {ratio} | {share} |")

# Loading a checkpoint (issue 15): MambaLM::load of a 516 MB F32 checkpoint at the mamba-130m shape, from a
# warm page cache, and the peak resident memory it costs over the file's size (target <= 1.1).
load = "BM_LoadCheckpoint/768/24/50280/iterations:3"
load_s, peak = seconds(load) if load in results else None, counter(load, "peak_rss_over_weights")
print("\n| loading a checkpoint, mamba-130m shape, 516 MB F32 (MambaLM::load, warm page cache) | time | peak resident memory / file size |")
print("| --- | --- | --- |")
rss = "-" if peak is None or peak < 0 else f"{peak:.3f} (target <= 1.1: {'met' if peak <= 1.1 else '**not met**'})"
print(f"| one file, memory-mapped | {'not run' if load_s is None else f'{1e3 * load_s:.0f} ms'} | {rss} |")

# Decoding with compact weights (issue 15): greedy decoding at the mamba-130m shape with the large matrices in
# each storage format, one thread. Each against the memory roofline of its own bytes per token (every stored
# weight once, the small parameters, the states read and written: BM_MambaLMDecodeFormat's bytes_per_token),
# target >= 80%; int8 against F32, target >= 3x the tokens per second.
DECODE_FORMAT = "BM_MambaLMDecodeFormat<float>/d_model:768/layers:24/vocab:50280/format:{}"
print("\n| decoding, mamba-130m shape, 1 thread, weights as | tokens/s | MB per token | GB/s | of the read roofline (target >= 80%) | vs F32 |")
print("| --- | --- | --- | --- | --- | --- |")
f32_s = seconds(DECODE_FORMAT.format(0))
for index, label in enumerate(("F32", "BF16", "F16", "int8 (q8: blocks of 32, one float scale each)")):
    name = DECODE_FORMAT.format(index)
    s_tok, per_token = seconds(name), counter(name, "bytes_per_token")
    if not s_tok or not per_token:
        print(f"| {label} | not run | | | | |")
        continue
    rate_bps = per_token / s_tok
    roof = f"{rate_bps / bw:.0%} ({'met' if rate_bps / bw >= 0.8 else '**not met**'})" if bw else "-"
    versus = f"{f32_s / s_tok:.2f}x" if f32_s else "-"
    if index == 3 and f32_s:
        versus += f" (target >= 3x: {'met' if f32_s / s_tok >= 3 else '**not met**'})"
    print(f"| {label} | {1 / s_tok:,.1f} | {per_token / 1e6:.1f} | {rate_bps / 1e9:.1f} | {roof} | {versus} |")

analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
if os.path.exists(analysis):
    print()
    with open(analysis) as f:
        print(f.read().rstrip())
