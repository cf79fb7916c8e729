"""Scoring generated videos against ground truth: metrics (PSNR, SSIM, LPIPS, track EPE, text
adherence), the no-model baselines, and the track-following report. Shared by the trainers' periodic
checks (train/) and the benchmarks (eval/), so it sits below both."""
