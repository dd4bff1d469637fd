#include "ckernels.h"

#include <string.h>

/* Same rounding on every instruction set: a·b + c stays two roundings. */
#pragma STDC FP_CONTRACT OFF
#pragma clang fp contract(off)

#define INLINE static inline __attribute__((always_inline))

/* Each kernel's body is an always-inlined `*_impl`, compiled three times below (AVX-512,
 * AVX2, baseline) and chosen by tk_isa(). */
#if defined(__x86_64__) && defined(__clang__)
#define T_AVX512 __attribute__((target("avx512f")))
#define T_AVX2 __attribute__((target("avx2")))
#else
#define T_AVX512
#define T_AVX2
#endif
#define VARIANTS(name, params, args)                                                                 \
    T_AVX512 static void name##_avx512 params { name##_impl args; }                                  \
    T_AVX2 static void name##_avx2 params { name##_impl args; }                                      \
    static void name##_base params { name##_impl args; }                                             \
    void tk_##name params {                                                                          \
        switch (tk_isa()) {                                                                          \
        case TK_ISA_AVX512: name##_avx512 args; return;                                              \
        case TK_ISA_AVX2: name##_avx2 args; return;                                                  \
        default: name##_base args; return;                                                           \
        }                                                                                            \
    }

INLINE void relu_impl(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
}
VARIANTS(relu, (const float *x, float *y, long n), (x, y, n))

INLINE void relu_backward_impl(const float *dy, const float *y, float *dx, long n) {
    for (long i = 0; i < n; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
}
VARIANTS(relu_backward, (const float *dy, const float *y, float *dx, long n), (dy, y, dx, n))

INLINE void add_impl(const float *a, const float *b, float *out, long n) {
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}
VARIANTS(add, (const float *a, const float *b, float *out, long n), (a, b, out, n))

enum { LANES = 16 };

/*
 * Batch norm, per channel: its values are `runs` runs of P floats, `stride` apart (one run per
 * image of an NCHW tensor). Sums go to 16 lanes in double, lane j taking each run's
 * elements j, j+16, …; a run's last P mod 16 elements go to a separate scalar sum, in order; the
 * lanes are added in order 0…15, then the scalar sum. Written with vector types (two vectors of
 * 8 doubles per 16 lanes): the compiler does not vectorize the scalar loop they stand for.
 */
typedef float f16 __attribute__((vector_size(64), aligned(4)));
typedef double d8 __attribute__((vector_size(64)));
typedef int i16 __attribute__((vector_size(64)));
#define LD16(p) (*(const f16 *)(p))

/* (Macros, not functions: vectors never pass through a call, whose ABI differs between clones.) */
#define lo8(v) __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), d8)
#define hi8(v) __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15), d8)

/* Lanes 0…15 of (a, b) added in order, then t. */
INLINE double lanes_sum(const double *a, const double *b, double t) {
    double r = 0;
    for (int j = 0; j < 8; j++) r += a[j];
    for (int j = 0; j < 8; j++) r += b[j];
    return r + t;
}
#define LANES_SUM(a, b, t) lanes_sum((const double *)&(a), (const double *)&(b), t)

/* The batch-norm kernels take a block of `nc` channels, P floats apart, and go through memory in
 * its order: image by image, each image's channels one after another (a contiguous stretch of
 * nc·P floats), rather than a channel's runs of every image one after another. From memory that
 * streams at about twice the rate of the channel-major order. Each channel's sums still see its
 * runs in image order with its own lanes, saved between runs, so they are the same bits in either
 * order; CB channels at a time bound the saved lanes. */
enum { CB = 32 };

/* One channel's sums in progress: 16 lanes of each in two vectors of 8 doubles, and the runs'
 * tails in order. */
typedef struct { d8 a1, b1, a2, b2; double t1, t2; } lanes;

INLINE void lanes_finish(const lanes *l, double *s1, double *s2) {
    *s1 = LANES_SUM(l->a1, l->b1, l->t1);
    *s2 = LANES_SUM(l->a2, l->b2, l->t2);
}

INLINE void bn_sums_impl(const float *x, long runs, long P, long stride, long nc, double *s1, double *s2) {
    lanes acc[CB];
    for (long c0 = 0; c0 < nc; c0 += CB) {
        long n = nc - c0 < CB ? nc - c0 : CB;
        memset(acc, 0, sizeof(lanes) * (size_t)n);
        for (long k = 0; k < runs; k++) {
            const float *xc = x + k * stride + c0 * P;
            for (long c = 0; c < n; c++, xc += P) {
                lanes l = acc[c];
                long i = 0;
                for (; i + LANES <= P; i += LANES) {
                    f16 v = LD16(xc + i);
                    d8 lo = lo8(v), hi = hi8(v);
                    l.a1 += lo; l.b1 += hi;
                    l.a2 += lo * lo; l.b2 += hi * hi;
                }
                for (; i < P; i++) { double v = xc[i]; l.t1 += v; l.t2 += v * v; }
                acc[c] = l;
            }
        }
        for (long c = 0; c < n; c++) lanes_finish(&acc[c], s1 + c0 + c, s2 + c0 + c);
    }
}
VARIANTS(bn_sums, (const float *x, long runs, long P, long stride, long nc, double *s1, double *s2),
         (x, runs, P, stride, nc, s1, s2))

/* Batch norm keeps no normalized copy of its input: backward recomputes h = ((x − hi) − lo)·s
 * with the forward's arithmetic, so h, the ReLU mask and every result are the bits a stored
 * copy would give. */
#define H(i) (((x[i] - hi) - lo) * s)

INLINE void bn_forward_run(const float *x, const float *r, float *y, long P, float hi, float lo, float s, float g,
                           float b, int relu) {
    if (r && relu) {
        for (long i = 0; i < P; i++) { float v = (g * H(i) + b) + r[i]; y[i] = v > 0 ? v : 0; }
    } else if (r) {
        for (long i = 0; i < P; i++) y[i] = (g * H(i) + b) + r[i];
    } else if (relu) {
        for (long i = 0; i < P; i++) { float v = g * H(i) + b; y[i] = v > 0 ? v : 0; }
    } else {
        for (long i = 0; i < P; i++) y[i] = g * H(i) + b;
    }
}

INLINE void bn_forward_impl(const float *x, const float *r, float *y, long runs, long P, long stride, long nc,
                            const tk_bn_channel *ch, int relu) {
    for (long k = 0; k < runs; k++)
        for (long c = 0; c < nc; c++) {
            long o = k * stride + c * P;
            bn_forward_run(x + o, r ? r + o : r, y + o, P, ch[c].hi, ch[c].lo, ch[c].s, ch[c].g, ch[c].b, relu);
        }
}
VARIANTS(bn_forward, (const float *x, const float *r, float *y, long runs, long P, long stride, long nc,
                      const tk_bn_channel *ch, int relu), (x, r, y, runs, P, stride, nc, ch, relu))

/* dy where the output was kept by its ReLU: mask 1 recomputes g·h + b > 0, mask 2 reads y > 0. */
#define D(i) (mask == 0 ? dy[i] : mask == 1 ? (g * H(i) + b > 0 ? dy[i] : 0) : (y[i] > 0 ? dy[i] : 0))

/* Vectors of 16 floats pass only inside one function here. */
INLINE void bn_sums(const float *dy0, const float *x0, const float *y0, long runs, long P, long stride, long nc,
                    const tk_bn_channel *ch, const int mask, double *s1, double *s2) {
    lanes acc[CB];
    for (long c0 = 0; c0 < nc; c0 += CB) {
        long n = nc - c0 < CB ? nc - c0 : CB;
        memset(acc, 0, sizeof(lanes) * (size_t)n);
        for (long k = 0; k < runs; k++) {
            for (long c = 0; c < n; c++) {
                long o = k * stride + (c0 + c) * P;
                const float *dy = dy0 + o, *x = x0 + o, *y = y0 ? y0 + o : y0;
                const tk_bn_channel *q = ch + c0 + c;
                float hi = q->hi, lo = q->lo, s = q->s, g = q->g, b = q->b;
                lanes l = acc[c];
                long i = 0;
                for (; i + LANES <= P; i += LANES) {
                    f16 h = ((LD16(x + i) - hi) - lo) * s, d = LD16(dy + i);
                    if (mask == 1) d = (f16)((i16)d & (g * h + b > 0));
                    if (mask == 2) d = (f16)((i16)d & (LD16(y + i) > 0));
                    d8 dl = lo8(d), dh = hi8(d);
                    l.a1 += dl; l.b1 += dh;
                    l.a2 += dl * lo8(h); l.b2 += dh * hi8(h);
                }
                for (; i < P; i++) { double d = D(i); l.t1 += d; l.t2 += d * (double)H(i); }
                acc[c] = l;
            }
        }
        for (long c = 0; c < n; c++) lanes_finish(&acc[c], s1 + c0 + c, s2 + c0 + c);
    }
}

INLINE void bn_backward_sums_impl(const float *dy, const float *x, const float *y, long runs, long P, long stride,
                                  long nc, const tk_bn_channel *ch, int mask, double *s1, double *s2) {
    if (mask == 2) bn_sums(dy, x, y, runs, P, stride, nc, ch, 2, s1, s2);
    else if (mask == 1) bn_sums(dy, x, y, runs, P, stride, nc, ch, 1, s1, s2);
    else bn_sums(dy, x, y, runs, P, stride, nc, ch, 0, s1, s2);
}
VARIANTS(bn_backward_sums, (const float *dy, const float *x, const float *y, long runs, long P, long stride, long nc,
                            const tk_bn_channel *ch, int mask, double *s1, double *s2),
         (dy, x, y, runs, P, stride, nc, ch, mask, s1, s2))

INLINE void bn_dx(const float *dy0, const float *x0, const float *y0, float *dx0, long runs, long P, long stride,
                  long nc, const tk_bn_channel *ch, const int mask) {
    for (long r = 0; r < runs; r++)
        for (long c = 0; c < nc; c++) {
            long o = r * stride + c * P;
            const float *dy = dy0 + o, *x = x0 + o, *y = y0 ? y0 + o : y0;
            float *dx = dx0 + o;
            float hi = ch[c].hi, lo = ch[c].lo, s = ch[c].s, g = ch[c].g, b = ch[c].b;
            float k = ch[c].k, a = ch[c].a, cc = ch[c].c;
            for (long i = 0; i < P; i++) dx[i] = k * ((D(i) - a) - H(i) * cc);
        }
}

INLINE void bn_backward_dx_impl(const float *dy, const float *x, const float *y, float *dx, long runs, long P,
                                long stride, long nc, const tk_bn_channel *ch, int mask) {
    if (mask == 2) bn_dx(dy, x, y, dx, runs, P, stride, nc, ch, 2);
    else if (mask == 1) bn_dx(dy, x, y, dx, runs, P, stride, nc, ch, 1);
    else bn_dx(dy, x, y, dx, runs, P, stride, nc, ch, 0);
}
VARIANTS(bn_backward_dx, (const float *dy, const float *x, const float *y, float *dx, long runs, long P, long stride,
                          long nc, const tk_bn_channel *ch, int mask), (dy, x, y, dx, runs, P, stride, nc, ch, mask))

/* g += y > 0 ? dy : 0 */
INLINE void add_relu_backward_impl(float *g, const float *dy, const float *y, long n) {
    for (long i = 0; i < n; i++) g[i] += y[i] > 0 ? dy[i] : 0;
}
VARIANTS(add_relu_backward, (float *g, const float *dy, const float *y, long n), (g, dy, y, n))
