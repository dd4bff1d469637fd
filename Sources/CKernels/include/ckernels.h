#ifndef TRICKS_CKERNELS_H
#define TRICKS_CKERNELS_H

#include <stddef.h>

/*
 * The kernels' instruction set (isa.c): one decision for every kernel, made at load time from
 * what the CPU runs (the best of AVX-512, AVX2 + FMA, portable C), lowered by the environment
 * variable TRICKS_ISA=avx512|avx2|portable. An unknown or unsupported request leaves the best
 * set in effect and is reported by tk_isa_env_error (1: unknown name, 2: the CPU lacks it).
 */
enum { TK_ISA_PORTABLE = 0, TK_ISA_AVX2 = 1, TK_ISA_AVX512 = 2 };
int tk_isa(void);
/* 0 on success; −1 (nothing changed) when the CPU lacks it. */
int tk_set_isa(int isa);
int tk_isa_supported(int isa);
int tk_isa_best(void);
const char *tk_isa_name(int isa);
/* The set named (as tk_isa_name spells it), or −1. */
int tk_isa_parse(const char *name);
int tk_isa_env_error(void);

/*
 * Fork-join loops (pool.c): fn(ctx, i) for every i in [0, count), on up to `threads` threads,
 * the caller's included; returns when all have run. Workers spin briefly between loops, then
 * sleep. Called from inside a loop, or while another thread runs one, it runs serially.
 */
typedef void (*tk_task_fn)(void *ctx, int index);
void tk_parallel(int count, int threads, tk_task_fn fn, void *ctx);
/* The calling thread's index within a tk_parallel loop: 0 for the thread that started it (and
 * for any thread outside the pool), 1 … threads − 1 for the pool's workers. Items are claimed
 * dynamically, so per-thread scratch is chosen by this index, never by the item. */
int tk_thread_index(void);

/*
 * Direct 3×3, padding-1 convolution over NCHW float32 tensors, stride 1 or 2
 * (the input gradient: stride 1 only).
 *
 * Each image is copied into a zero-bordered plane of (h+2)×(w+2) per channel;
 * an output pixel (y, x) then reads tap (dy, dx) at a fixed offset
 * dy·(w+2)+dx from its own position in that plane, so a run of 16 outputs along
 * a row (the two border columns included and thrown away afterwards) is one
 * contiguous load per tap. With stride 2 each channel is split into its four
 * phases (even/odd rows × columns) and a tap reads one phase, again contiguously. Forward and input-gradient kernels hold 8 output
 * channels × 48 positions in registers; the weight-gradient kernel holds
 * 3 output channels × 9 taps. No im2col matrix, no GEMM.
 *
 * Each kernel has an AVX-512, an AVX2 + FMA and a portable C version; tk_isa() picks one.
 * `scratch` must hold
 * tk_conv3x3_scratch(...) floats; its contents on entry do not matter.
 */

/* Floats of scratch the three functions below need for these shapes. */
size_t tk_conv3x3_scratch(int n, int cin, int cout, int h, int w, int stride);

/* y (n, cout, oh, ow) = conv(x (n, cin, h, w), weight (cout, cin, 3, 3)); oh = ⌊(h−1)/stride⌋+1. */
void tk_conv3x3_forward(const float *x, int n, int cin, int h, int w, int stride,
                        const float *weight, int cout, float *y, float *scratch);

/* dx (n, cin, h, w) = input gradient for dy (n, cout, h, w) of a stride-1 conv; overwrites dx. */
void tk_conv3x3_backward_data(const float *dy, int n, int cin, int h, int w,
                              const float *weight, int cout, float *dx, float *scratch);

/* The input gradient of a stride-2 layer: dx (n, cin, h, w) from dy (n, cout, ⌈h/2⌉, ⌈w/2⌉),
 * h and w the layer's input size; overwrites dx; scratch of tk_conv3x3_scratch(n, cin, cout, h,
 * w, 2) floats. */
void tk_conv3x3_backward_data_s2(const float *dy, int n, int cin, int h, int w, const float *weight, int cout,
                                 float *dx, float *scratch);

/* dweight (cout, cin, 3, 3) += Σ over images and pixels of dy (n, cout, oh, ow) ⊗ x (n, cin, h, w). */
void tk_conv3x3_backward_weight(const float *x, const float *dy, int n, int cin, int h, int w, int stride,
                                int cout, float *dweight, float *scratch);

/* 1×1 stride-2 layers without padding, weight (cout, cin): y (n, cout, ⌈h/2⌉, ⌈w/2⌉) from x
 * (n, cin, h, w); the input gradient (overwrites dx); the weight gradient (adds into dweight).
 * Scratch of tk_conv1x1_s2_scratch floats for n images. */
size_t tk_conv1x1_s2_scratch(int n, int cin, int cout, int h, int w);
void tk_conv1x1_s2_forward(const float *x, int n, int cin, int h, int w, const float *weight, int cout, float *y,
                           float *scratch);
void tk_conv1x1_s2_backward_data(const float *dy, int n, int cin, int h, int w, const float *weight, int cout,
                                 float *dx, float *scratch);
/* The weight gradient (adds into dweight) in two parts that threads can share: packing images
 * [n0, n1) into scratch, then rows [k0, k1) of dweight (k0 a multiple of 4) over all n images;
 * either part's disjoint ranges may run concurrently, and no result depends on the split. */
void tk_conv1x1_s2_wgrad_pack(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *scratch,
                              int n0, int n1);
void tk_conv1x1_s2_wgrad_rows(int n, int cin, int h, int w, int cout, float *dweight, const float *scratch, int k0,
                              int k1);

/* Images per group of the weight gradient: it adds each group's sum into dweight in turn,
 * so calls on consecutive whole groups, summed in order, give the same bits as one call. */
int tk_conv3x3_wgrad_group(int cin, int cout, int h, int w, int stride);

/*
 * Winograd F(2×2, 3×3) for 3×3, padding-1, stride-1 convolutions (winograd.c): 16 small
 * matrix products on transformed 4×4 tiles instead of 36 multiply-adds per 2×2 outputs.
 * `scratch` must hold tk_wino_scratch(...) floats; contents on entry do not matter.
 */

/* Floats of scratch the forward (cin → cout), input-gradient (cout → cin) and weight-gradient
 * calls below need for h×w planes. */
size_t tk_wino_scratch(int cin, int cout, int h, int w);

/* Transformed kernels: flip 0 → wt (16, cin, cout) for the forward pass; flip 1 → wt (16, cout, cin)
 * of the rotated kernels, for the input gradient (tk_wino_forward with the channel roles swapped).
 * Fills rows [k0, k1) of the first channel index (calls on disjoint ranges may run concurrently). */
void tk_wino_weights(const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1);

/* y (n, cout, h, w) = conv(x (n, cin, h, w)) with transformed kernels wt (16, cin, cout); overwrites y. */
void tk_wino_forward(const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y,
                     float *scratch);

/* z (16, cout, cin) = the weight gradient in the transformed domain, Σ over the n images of
 * x (n, cin, h, w) and dy (n, cout, h, w), summed group by group (tk_wino_wgrad_group images
 * each) in order; overwrites z. */
void tk_wino_wgrad(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z,
                   float *scratch);

/* Images per weight-gradient group: a call on whole groups equals the in-order sum of one
 * call per group. */
int tk_wino_wgrad_group(int cin, int cout, int h, int w);

/* dweight (cout, cin, 3, 3) += Gᵀ z G, the transformed gradient z (16, cout, cin) brought back, for
 * the kernels p0 … p1 − 1 of the cout·cin (disjoint ranges may run concurrently). */
void tk_wino_wgrad_finish(const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1);

/* Winograd F(4×4, 3×3) for the same convolutions: 36 products on transformed 6×6 tiles per
 * 4×4 outputs (4× fewer multiplies than direct, 1.8× fewer than F(2×2, 3×3)); output and input
 * gradient only. Kernels transformed by tk_wino4_weights, (36, cin, cout) or, with flip,
 * (36, cout, cin); scratch of tk_wino4_scratch floats. */
size_t tk_wino4_scratch(int cin, int cout, int h, int w);
void tk_wino4_weights(const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1);
void tk_wino4_forward(const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y,
                      float *scratch);
/* The weight gradient with F(4×4, 3×3), as tk_wino_wgrad / _group / _finish with z (36, cout, cin)
 * and scratch of tk_wino4_wgrad_scratch floats. */
size_t tk_wino4_wgrad_scratch(int cin, int cout, int h, int w);
void tk_wino4_wgrad(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z,
                    float *scratch);
int tk_wino4_wgrad_group(int cin, int cout, int h, int w);
void tk_wino4_wgrad_finish(const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1);

/* Tests: nonzero makes the AVX2 path run the AVX-512 register tiles (8 × 3 vectors of 16 forward,
 * 4 × 4 channels in the weight gradient), so CPUs without AVX-512 check that tiling's logic. */
void tk_wino_use_wide_tiles(int on);

/*
 * Element-wise kernels of the layers (ReLU, residual add, batch norm). Each has an
 * AVX-512, an AVX2 and a baseline version chosen by tk_isa(); all three round
 * identically (no contraction into FMAs, sums kept in fixed lanes and combined
 * in a fixed order), so results never depend on the CPU.
 */

/* y = max(x, 0) */
void tk_relu(const float *x, float *y, long n);
/* dx = y > 0 ? dy : 0 */
void tk_relu_backward(const float *dy, const float *y, float *dx, long n);
/* out = a + b */
void tk_add(const float *a, const float *b, float *out, long n);
/*
 * Batch norm over a block of nc channels: channel c's values are `runs` runs of P floats (one per
 * image), the first at c·P and each next one `stride` floats on (an NCHW tensor: stride C·P).
 * Sums are accumulated in double, per channel in the same order whatever the block.
 */
/* One channel's constants: h = ((x − hi) − lo)·s (the mean split into two floats, s = 1/σ), the
 * output g·h + b; k, a and c for the input gradient. */
typedef struct { float hi, lo, s, g, b, k, a, c; } tk_bn_channel;
/* s1[c] = Σx and s2[c] = Σx² of channel c. */
void tk_bn_sums(const float *x, long runs, long P, long stride, long nc, double *s1, double *s2);
/* y = g·h + b, plus r when r is not NULL, then max(·, 0) when relu. */
void tk_bn_forward(const float *x, const float *r, float *y, long runs, long P, long stride, long nc,
                   const tk_bn_channel *ch, int relu);
/* Backward through it, from x again (h recomputed bit for bit): with d = dy (mask 0), dy where
 * g·h + b > 0 (mask 1: the ReLU of a run without r), or dy where y > 0 (mask 2: y the forward's
 * output), s1[c] = Σd and s2[c] = Σd·h; y is read only for mask 2 (NULL otherwise is fine). */
void tk_bn_backward_sums(const float *dy, const float *x, const float *y, long runs, long P, long stride, long nc,
                         const tk_bn_channel *ch, int mask, double *s1, double *s2);
/* dx = k·((d − a) − h·c), d and h as in tk_bn_backward_sums. */
void tk_bn_backward_dx(const float *dy, const float *x, const float *y, float *dx, long runs, long P, long stride,
                       long nc, const tk_bn_channel *ch, int mask);
/* g += y > 0 ? dy : 0: the gradient of a ReLU'd sum added into one of its terms' gradients. */
void tk_add_relu_backward(float *g, const float *dy, const float *y, long n);

#endif
