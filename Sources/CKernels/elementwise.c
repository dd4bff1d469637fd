#include "ckernels.h"

/* Same rounding on every instruction set: a·b + c stays two roundings. */
#pragma STDC FP_CONTRACT OFF
#pragma clang fp contract(off)

#if defined(__x86_64__) && defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif

CLONES void tk_relu(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0;
}

CLONES void tk_relu_backward(const float *dy, const float *y, float *dx, long n) {
    for (long i = 0; i < n; i++) dx[i] = y[i] > 0 ? dy[i] : 0;
}

CLONES void tk_add(const float *a, const float *b, float *out, long n) {
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

CLONES void tk_add_relu(const float *a, const float *b, float *out, long n) {
    for (long i = 0; i < n; i++) {
        float v = a[i] + b[i];
        out[i] = v > 0 ? v : 0;
    }
}

enum { LANES = 16 };

/* Lane j sums elements j, j+16, j+32, …; lanes are then added in order 0…15. */
CLONES void tk_sums(const float *x, long n, double sums[2]) {
    double s1[LANES] = {0}, s2[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double v = x[i + j];
            s1[j] += v;
            s2[j] += v * v;
        }
    double r1 = 0, r2 = 0;
    for (int j = 0; j < LANES; j++) { r1 += s1[j]; r2 += s2[j]; }
    for (; i < n; i++) { double v = x[i]; r1 += v; r2 += v * v; }
    sums[0] = r1; sums[1] = r2;
}

CLONES void tk_dot_sums(const float *a, const float *b, long n, double sums[2]) {
    double s1[LANES] = {0}, s2[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double va = a[i + j];
            s1[j] += va;
            s2[j] += va * (double)b[i + j];
        }
    double r1 = 0, r2 = 0;
    for (int j = 0; j < LANES; j++) { r1 += s1[j]; r2 += s2[j]; }
    for (; i < n; i++) { double va = a[i]; r1 += va; r2 += va * (double)b[i]; }
    sums[0] = r1; sums[1] = r2;
}

CLONES void tk_dot_sums_relu(const float *dy, const float *h, long n, float g, float beta, double sums[2]) {
    double s1[LANES] = {0}, s2[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float hv = h[i + j], yv = g * hv + beta;
            double d = yv > 0 ? dy[i + j] : 0;
            s1[j] += d;
            s2[j] += d * (double)hv;
        }
    double r1 = 0, r2 = 0;
    for (int j = 0; j < LANES; j++) { r1 += s1[j]; r2 += s2[j]; }
    for (; i < n; i++) {
        float hv = h[i], yv = g * hv + beta;
        double d = yv > 0 ? dy[i] : 0;
        r1 += d; r2 += d * (double)hv;
    }
    sums[0] = r1; sums[1] = r2;
}

CLONES void tk_normalize(const float *x, float *h, float *y, long n, float hi, float lo, float s, float g, float b,
                         int relu) {
    if (relu) {
        for (long i = 0; i < n; i++) {
            float hv = ((x[i] - hi) - lo) * s;
            float yv = g * hv + b;
            h[i] = hv;
            y[i] = yv > 0 ? yv : 0;
        }
    } else {
        for (long i = 0; i < n; i++) {
            float hv = ((x[i] - hi) - lo) * s;
            h[i] = hv;
            y[i] = g * hv + b;
        }
    }
}

CLONES void tk_bn_backward(const float *dy, const float *h, float *dx, long n, float s, float a, float c) {
    for (long i = 0; i < n; i++) dx[i] = s * ((dy[i] - a) - h[i] * c);
}

CLONES void tk_bn_backward_relu(const float *dy, const float *h, float *dx, long n, float s, float a, float c,
                                float g, float beta) {
    for (long i = 0; i < n; i++) {
        float hv = h[i], yv = g * hv + beta;
        float d = yv > 0 ? dy[i] : 0;
        dx[i] = s * ((d - a) - hv * c);
    }
}
