#include "ckernels.h"

#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { KB = 8, PB = 48, WKB = 3, SLACK = 64, GROUP_FLOATS = 1 << 18 };

/* The *_portable loops are plain C for the target's baseline, the reference the vector versions
 * are tested against. */
#define AVX2 __attribute__((target("avx2,fma")))

static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }

/*
 * Geometry of the zero-bordered planes. Stride 1: one (h+2)×(w+2) plane per channel, tap
 * (dy, dx) at offset dy·(w+2)+dx. Stride 2: the padded image split into its four phases
 * (even/odd rows × even/odd columns), each (oh+1)×(ow+1); tap (dy, dx) reads phase
 * (dy mod 2, dx mod 2) at offset ⌊dy/2⌋·(ow+1)+⌊dx/2⌋, so outputs are again contiguous.
 */
typedef struct {
    int ih, iw, stride; /* input height, width; stride 1 or 2 */
    int h, w, wp;      /* output height, width; row pitch of positions and planes */
    size_t plane;      /* floats per channel (all phases) */
    size_t quarter;    /* floats per phase (stride 2) */
    size_t len;        /* h·wp: output positions in padded-pitch coordinates */
    int taps;          /* 9; fewer for the phases of a stride-2 input gradient */
    int offs[9];       /* tap (dy, dx) → offset from an output position */
} geom;

static geom make_geom(int ih, int iw, int stride) {
    geom g;
    g.ih = ih; g.iw = iw; g.stride = stride; g.taps = 9;
    if (stride == 1) {
        g.h = ih; g.w = iw; g.wp = iw + 2;
        g.plane = (size_t)(ih + 2) * (size_t)(iw + 2);
        g.quarter = g.plane;
        for (int t = 0; t < 9; t++) g.offs[t] = (t / 3) * g.wp + t % 3;
    } else {
        g.h = (ih - 1) / 2 + 1; g.w = (iw - 1) / 2 + 1; g.wp = g.w + 1;
        g.quarter = (size_t)(g.h + 1) * (size_t)g.wp;
        g.plane = 4 * g.quarter;
        for (int t = 0; t < 9; t++) {
            int dy = t / 3, dx = t % 3;
            g.offs[t] = (int)(((dy % 2) * 2 + dx % 2) * g.quarter) + (dy / 2) * g.wp + dx / 2;
        }
    }
    g.len = (size_t)g.h * (size_t)g.wp;
    return g;
}

/* Floats the forward-style pass (cin → cout channels) needs. */
static size_t direct_scratch(int cin, int cout, geom g) {
    size_t kpad = round_up((size_t)cout, KB);
    return kpad * (size_t)cin * 9 + (size_t)cin * g.plane + SLACK + KB * round_up(g.len, PB);
}

/* Floats of one image in a weight-gradient group: its planes and its gradient rows. */
static size_t wgrad_image_floats(int cin, int cout, geom g) {
    return (size_t)cin * g.plane + round_up((size_t)cout, WKB) * round_up(g.len, 16);
}

/* Images per weight-gradient group: their planes stay in L2. */
static int wgrad_group(int n, int cin, int cout, geom g) {
    size_t per = wgrad_image_floats(cin, cout, g);
    size_t group = GROUP_FLOATS / (per ? per : 1);
    if (group < 1) group = 1;
    if (group > (size_t)n) group = (size_t)(n > 0 ? n : 1);
    return (int)group;
}

int tk_conv3x3_wgrad_group(int cin, int cout, int h, int w, int stride) {
    return wgrad_group(1 << 30, cin, cout, make_geom(h, w, stride));
}

static size_t wgrad_scratch(int n, int cin, int cout, geom g) {
    size_t group = (size_t)wgrad_group(n, cin, cout, g);
    return group * wgrad_image_floats(cin, cout, g) + SLACK;
}

/* The stride-2 input gradient's geometry: dy's planes (oh×ow) with a zero last row and column. */
static geom s2_geom(int h, int w) {
    geom g;
    memset(&g, 0, sizeof g);
    g.h = g.ih = (h - 1) / 2 + 1; g.w = g.iw = (w - 1) / 2 + 1; g.wp = g.w + 1; g.stride = 1;
    g.plane = g.quarter = (size_t)(g.h + 1) * g.wp;
    g.len = (size_t)g.h * g.wp;
    return g;
}

/* Its floats: the four phases' packed weights (9 taps in all), dy's planes, one block's output. */
static size_t s2_input_grad_scratch(int cin, int cout, geom g) {
    return 9 * round_up((size_t)cin, KB) * (size_t)cout + (size_t)cout * g.plane + SLACK + KB * round_up(g.len, PB);
}

size_t tk_conv3x3_scratch(int n, int cin, int cout, int h, int w, int stride) {
    geom g = make_geom(h, w, stride);
    size_t a = direct_scratch(cin, cout, g), b = direct_scratch(cout, cin, g), c = wgrad_scratch(n, cin, cout, g);
    if (stride == 2) {
        size_t d = s2_input_grad_scratch(cin, cout, s2_geom(h, w));
        b = b > d ? b : d;
    }
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* Copies one image's channels (ih×iw each) into zero-bordered planes; borders must already be zero. */
static void fill_planes(const float *x, int c, geom g, float *planes) {
    for (int ch = 0; ch < c; ch++) {
        const float *src = x + (size_t)ch * g.ih * g.iw;
        float *dst = planes + (size_t)ch * g.plane;
        if (g.stride == 1) {
            for (int y = 0; y < g.ih; y++) memcpy(dst + (size_t)(y + 1) * g.wp + 1, src + (size_t)y * g.iw, sizeof(float) * g.iw);
            continue;
        }
        /* Padded row r = input row r−1 goes to phase row r/2 of phases (r mod 2, ·). */
        for (int y = 0; y < g.ih; y++) {
            int r = y + 1;
            float *even = dst + (size_t)((r % 2) * 2) * g.quarter + (size_t)(r / 2) * g.wp;  /* even padded columns */
            float *odd = even + g.quarter;                                                     /* odd padded columns */
            const float *row = src + (size_t)y * g.iw;
            /* padded column x + 1: odd for even x, even for odd x (two loops the compiler vectorizes) */
            for (int k = 0; 2 * k < g.iw; k++) odd[k] = row[2 * k];
            for (int k = 0; 2 * k + 1 < g.iw; k++) even[k + 1] = row[2 * k + 1];
        }
    }
}

/*
 * Packs a conv's weights as [block of 8 outputs][input channel][tap][8]:
 * wconv[o][i][t] = weight[o][i][t] (forward) or weight[i][o][8−t] (input gradient,
 * where the layer's outputs are this conv's inputs). Missing outputs are zero.
 */
static void pack_weights(const float *weight, int cout, int cin, int transpose, float *packed) {
    int blocks = (cout + KB - 1) / KB;
    for (int b = 0; b < blocks; b++)
        for (int i = 0; i < cin; i++)
            for (int t = 0; t < 9; t++)
                for (int j = 0; j < KB; j++) {
                    int o = b * KB + j;
                    float v = 0;
                    if (o < cout) v = transpose ? weight[((size_t)i * cout + o) * 9 + (8 - t)]
                                                : weight[((size_t)o * cin + i) * 9 + t];
                    packed[(((size_t)b * cin + i) * 9 + t) * KB + j] = v;
                }
}

/* One block of 8 output channels over positions [0, lr): out[j][p] = Σ_i Σ_t w[i][t][j]·plane_i[p + off_t]. */
static void block_portable(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr) {
    for (size_t p0 = 0; p0 < lr; p0 += PB) {
        float acc[KB][PB];
        memset(acc, 0, sizeof acc);
        for (int i = 0; i < cin; i++) {
            const float *src = planes + (size_t)i * g.plane + p0;
            const float *wi = wb + (size_t)i * g.taps * KB;
            for (int t = 0; t < g.taps; t++) {
                const float *s = src + g.offs[t];
                for (int j = 0; j < KB; j++) {
                    float wv = wi[t * KB + j];
                    for (int p = 0; p < PB; p++) acc[j][p] += wv * s[p];
                }
            }
        }
        for (int j = 0; j < KB; j++) memcpy(out + (size_t)j * lr + p0, acc[j], sizeof acc[j]);
    }
}

#if defined(__x86_64__)
/* 8 output channels × nv vectors of 16 positions from p0, over `taps` taps; nv and taps are
 * constants after inlining. */
__attribute__((target("avx512f"), always_inline))
static inline void tile_avx512(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr,
                               size_t p0, int nv, const int taps) {
    __m512 a[KB][3];
    for (int j = 0; j < KB; j++)
        for (int v = 0; v < nv; v++) a[j][v] = _mm512_setzero_ps();
    for (int i = 0; i < cin; i++) {
        const float *src = planes + (size_t)i * g.plane + p0;
        const float *wi = wb + (size_t)i * taps * KB;
        for (int t = 0; t < taps; t++) {
            const float *s = src + g.offs[t];
            __m512 x[3];
            for (int v = 0; v < nv; v++) x[v] = _mm512_loadu_ps(s + 16 * v);
            const float *wt = wi + t * KB;
            for (int j = 0; j < KB; j++) {
                __m512 b = _mm512_set1_ps(wt[j]);
                for (int v = 0; v < nv; v++) a[j][v] = _mm512_fmadd_ps(b, x[v], a[j][v]);
            }
        }
    }
    for (int j = 0; j < KB; j++)
        for (int v = 0; v < nv; v++) _mm512_storeu_ps(out + (size_t)j * lr + p0 + 16 * v, a[j][v]);
}

/* Like block_portable, in tiles of 48 positions and a last tile of 16 or 32. */
#define BLOCK_TAPS(T)                                                                                    \
    {                                                                                                    \
        for (size_t p0 = 0; p0 < full; p0 += PB) tile_avx512(planes, cin, g, wb, out, lr, p0, 3, T);     \
        if (vectors % 3 == 2) tile_avx512(planes, cin, g, wb, out, lr, full, 2, T);                      \
        if (vectors % 3 == 1) tile_avx512(planes, cin, g, wb, out, lr, full, 1, T);                      \
    }
__attribute__((target("avx512f")))
static void block_avx512(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr) {
    size_t vectors = (g.len + 15) / 16, full = vectors / 3 * 48;
    switch (g.taps) {
    case 1: BLOCK_TAPS(1) break;
    case 2: BLOCK_TAPS(2) break;
    case 4: BLOCK_TAPS(4) break;
    default: BLOCK_TAPS(9) break;
    }
}
#undef BLOCK_TAPS

/* AVX2 + FMA, 16 ymm registers: 4 of the block's 8 output channels × nv (≤ 2) vectors of 8
 * positions: 8 accumulators, 2 loaded input vectors, 1 broadcast weight. (4 × 3, which fills
 * all 16 registers, makes the compiler spill in the inner loop: 42 GFLOP/s against 90 on a
 * Zen 3 core.) */
AVX2 __attribute__((always_inline))
static inline void tile_avx2(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr,
                             size_t p0, int j0, int nv, const int taps) {
    __m256 a[4][2];
    for (int j = 0; j < 4; j++)
        for (int v = 0; v < nv; v++) a[j][v] = _mm256_setzero_ps();
    for (int i = 0; i < cin; i++) {
        const float *src = planes + (size_t)i * g.plane + p0;
        const float *wi = wb + (size_t)i * taps * KB + j0;
        for (int t = 0; t < taps; t++) {
            const float *s = src + g.offs[t];
            __m256 x[2];
            for (int v = 0; v < nv; v++) x[v] = _mm256_loadu_ps(s + 8 * v);
            const float *wt = wi + t * KB;
            for (int j = 0; j < 4; j++) {
                __m256 b = _mm256_broadcast_ss(wt + j);
                for (int v = 0; v < nv; v++) a[j][v] = _mm256_fmadd_ps(b, x[v], a[j][v]);
            }
        }
    }
    for (int j = 0; j < 4; j++)
        for (int v = 0; v < nv; v++) _mm256_storeu_ps(out + (size_t)(j0 + j) * lr + p0 + 8 * v, a[j][v]);
}

/* Tiles of 16 positions and a last tile of 8, each for both halves of the block. */
#define BLOCK_TAPS2(T)                                                                                   \
    {                                                                                                    \
        for (size_t p0 = 0; p0 < full; p0 += 16)                                                         \
            for (int j0 = 0; j0 < KB; j0 += 4) tile_avx2(planes, cin, g, wb, out, lr, p0, j0, 2, T);      \
        if (vectors % 2)                                                                                 \
            for (int j0 = 0; j0 < KB; j0 += 4) tile_avx2(planes, cin, g, wb, out, lr, full, j0, 1, T);   \
    }
AVX2 static void block_avx2(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr) {
    size_t vectors = (g.len + 7) / 8, full = vectors / 2 * 16;
    switch (g.taps) {
    case 1: BLOCK_TAPS2(1) break;
    case 2: BLOCK_TAPS2(2) break;
    case 4: BLOCK_TAPS2(4) break;
    default: BLOCK_TAPS2(9) break;
    }
}
#undef BLOCK_TAPS2
#endif

/* One block through the kernel of the instruction set in use. */
static void run_block(const float *planes, int cin, geom g, const float *wb, float *out, size_t lr) {
#if defined(__x86_64__)
    switch (tk_isa()) {
    case TK_ISA_AVX512: block_avx512(planes, cin, g, wb, out, lr); return;
    case TK_ISA_AVX2: block_avx2(planes, cin, g, wb, out, lr); return;
    default: break;
    }
#endif
    block_portable(planes, cin, g, wb, out, lr);
}

/* y (n, cout, h, w) from x (n, cin, h, w) with packed weights; shared by forward and input gradient. */
static void direct(const float *x, int n, int cin, geom g, const float *packed, int cout, float *y, float *scratch) {
    size_t lr = round_up(g.len, PB);
    float *planes = scratch;
    float *out = planes + (size_t)cin * g.plane + SLACK;
    memset(planes, 0, sizeof(float) * ((size_t)cin * g.plane + SLACK));
    int blocks = (cout + KB - 1) / KB;
    size_t hw = (size_t)g.h * g.w, in = (size_t)g.ih * g.iw;
    for (int img = 0; img < n; img++) {
        fill_planes(x + (size_t)img * cin * in, cin, g, planes);
        for (int b = 0; b < blocks; b++) {
            const float *wb = packed + (size_t)b * cin * 9 * KB;
            run_block(planes, cin, g, wb, out, lr);
            for (int j = 0; j < KB && b * KB + j < cout; j++) {
                float *dst = y + ((size_t)img * cout + b * KB + j) * hw;
                const float *src = out + (size_t)j * lr;
                for (int r = 0; r < g.h; r++) memcpy(dst + (size_t)r * g.w, src + (size_t)r * g.wp, sizeof(float) * g.w);
            }
        }
    }
}

/* A conv from `inputs` to `outputs` channels of the layer's weight (cout, cin, 3, 3), transposed
 * and flipped for the input gradient. */
static void run_direct(const float *x, int n, int inputs, int h, int w, int stride, const float *weight,
                       int outputs, int transpose, float *y, float *scratch) {
    geom g = make_geom(h, w, stride);
    float *packed = scratch;
    pack_weights(weight, outputs, inputs, transpose, packed);
    direct(x, n, inputs, g, packed, outputs, y, packed + round_up((size_t)outputs, KB) * inputs * 9);
}

void tk_conv3x3_forward(const float *x, int n, int cin, int h, int w, int stride,
                        const float *weight, int cout, float *y, float *scratch) {
    run_direct(x, n, cin, h, w, stride, weight, cout, 0, y, scratch);
}

void tk_conv3x3_backward_data(const float *dy, int n, int cin, int h, int w,
                              const float *weight, int cout, float *dx, float *scratch) {
    run_direct(dy, n, cout, h, w, 1, weight, cin, 1, dx, scratch);
}

/*
 * Input gradient of a stride-2 layer without unfolding: dx[iy][ix] = Σ W[k][c][ky][kx]·dy[k][oy][ox]
 * over 2·oy − 1 + ky = iy and 2·ox − 1 + kx = ix. An even iy takes only ky = 1 (oy = iy/2); an odd
 * one ky = 0 (oy = (iy+1)/2) and ky = 2 (oy = (iy−1)/2); columns likewise. So each of dx's four
 * phases (row parity p, column parity q) is a stride-1 correlation of dy with 1, 2, 2 or 4 taps,
 * at offsets 0 or +1 row and column of dy's planes (a zero last row and column stand for the
 * outputs past the edge), run through the same register-blocked kernel as the forward pass and
 * written to its rows and columns of dx: the forward pass's multiplies, not 4× as with a
 * zero-inserted dy, and no unfolded matrix.
 */
void tk_conv3x3_backward_data_s2(const float *dy, int n, int cin, int h, int w, const float *weight, int cout,
                                 float *dx, float *scratch) {
    geom g = s2_geom(h, w);
    int blocks = (cin + KB - 1) / KB;
    size_t kpad = (size_t)blocks * KB, lr = round_up(g.len, PB), ohw = (size_t)g.h * g.w;
    float *packed = scratch, *planes = packed + 9 * kpad * (size_t)cout, *out = planes + (size_t)cout * g.plane + SLACK;
    geom ph[4];
    size_t wofs[4], o = 0;
    for (int f = 0; f < 4; f++) {
        int p = f / 2, q = f % 2, t = 0;
        /* the taps (index, offset in dy) this phase takes along rows and along columns */
        int rk[2] = {1, 0}, rd[2] = {0, 0}, nr = 1, ck[2] = {1, 0}, cd[2] = {0, 0}, nc = 1;
        if (p) { rk[0] = 0; rd[0] = 1; rk[1] = 2; rd[1] = 0; nr = 2; }
        if (q) { ck[0] = 0; cd[0] = 1; ck[1] = 2; cd[1] = 0; nc = 2; }
        int ky[4], kx[4];
        ph[f] = g;
        for (int r = 0; r < nr; r++)
            for (int c = 0; c < nc; c++) { ky[t] = rk[r]; kx[t] = ck[c]; ph[f].offs[t++] = rd[r] * g.wp + cd[c]; }
        ph[f].taps = t;
        wofs[f] = o;
        /* [block of 8 input channels][output channel k][tap][8] */
        for (int b = 0; b < blocks; b++)
            for (int k = 0; k < cout; k++)
                for (int tt = 0; tt < t; tt++)
                    for (int j = 0; j < KB; j++) {
                        int c = b * KB + j;
                        packed[o + (((size_t)b * cout + k) * t + tt) * KB + j] =
                            c < cin ? weight[((size_t)k * cin + c) * 9 + ky[tt] * 3 + kx[tt]] : 0;
                    }
        o += (size_t)t * kpad * cout;
    }
    memset(planes, 0, sizeof(float) * ((size_t)cout * g.plane + SLACK));
    for (int img = 0; img < n; img++) {
        for (int k = 0; k < cout; k++) {
            const float *src = dy + ((size_t)img * cout + k) * ohw;
            for (int r = 0; r < g.h; r++)
                memcpy(planes + (size_t)k * g.plane + (size_t)r * g.wp, src + (size_t)r * g.w, sizeof(float) * g.w);
        }
        for (int f = 0; f < 4; f++) {
            int p = f / 2, q = f % 2, rows = (h - p + 1) / 2, cols = (w - q + 1) / 2;
            for (int b = 0; b < blocks; b++) {
                const float *wb = packed + wofs[f] + (size_t)b * cout * ph[f].taps * KB;
                run_block(planes, cout, ph[f], wb, out, lr);
                for (int j = 0; j < KB && b * KB + j < cin; j++) {
                    float *d = dx + ((size_t)img * cin + b * KB + j) * h * w + (size_t)p * w + q;
                    const float *s = out + (size_t)j * lr;
                    for (int a = 0; a < rows; a++)
                        for (int c = 0; c < cols; c++) d[(size_t)(2 * a) * w + 2 * c] = s[(size_t)a * g.wp + c];
                }
            }
        }
    }
}

/* Σ over the group's images of d_k[p]·plane_i[p + off_t] for k = k0 … k0+2 and all taps, added to acc. */
static void wgrad_portable(const float *planes, const float *grads, int group, int cin, int kpad, geom g,
                           size_t lr, int i, int k0, double acc[WKB][9]) {
    for (int img = 0; img < group; img++) {
        const float *pl = planes + ((size_t)img * cin + i) * g.plane;
        const float *d = grads + ((size_t)img * kpad + k0) * lr;
        for (int t = 0; t < 9; t++) {
            const float *s = pl + g.offs[t];
            float sum[WKB][16] = {{0}};   /* 16 lanes, so the loop vectorizes without reassociation */
            for (size_t p = 0; p < lr; p += 16)
                for (int kk = 0; kk < WKB; kk++)
                    for (int j = 0; j < 16; j++) sum[kk][j] += d[kk * lr + p + j] * s[p + j];
            for (int kk = 0; kk < WKB; kk++) {
                float total = 0;
                for (int j = 0; j < 16; j++) total += sum[kk][j];
                acc[kk][t] += total;
            }
        }
    }
}

#if defined(__x86_64__)
/* The 27 accumulators are named variables, not an array: clang then keeps all of them, the
 * three gradient rows and the loaded plane vector in the 32 registers without spilling. */
#define WG_DECL(t) __m512 a0_##t = _mm512_setzero_ps(), a1_##t = a0_##t, a2_##t = a0_##t; \
                   const size_t o##t = (size_t)g.offs[t];
#define WG_TAP(t) { __m512 v = _mm512_loadu_ps(q + o##t); a0_##t = _mm512_fmadd_ps(x0, v, a0_##t); \
                    a1_##t = _mm512_fmadd_ps(x1, v, a1_##t); a2_##t = _mm512_fmadd_ps(x2, v, a2_##t); }
#define WG_SUM(t) { acc[0][t] += _mm512_reduce_add_ps(a0_##t); acc[1][t] += _mm512_reduce_add_ps(a1_##t); \
                    acc[2][t] += _mm512_reduce_add_ps(a2_##t); }

__attribute__((target("avx512f")))
static void wgrad_avx512(const float *planes, const float *grads, int group, int cin, int kpad, geom g,
                         size_t lr, int i, int k0, double acc[WKB][9]) {
    WG_DECL(0) WG_DECL(1) WG_DECL(2) WG_DECL(3) WG_DECL(4) WG_DECL(5) WG_DECL(6) WG_DECL(7) WG_DECL(8)
    for (int img = 0; img < group; img++) {
        const float *pl = planes + ((size_t)img * cin + i) * g.plane;
        const float *d0 = grads + ((size_t)img * kpad + k0) * lr, *d1 = d0 + lr, *d2 = d1 + lr;
        for (size_t p = 0; p < lr; p += 16) {
            __m512 x0 = _mm512_loadu_ps(d0 + p), x1 = _mm512_loadu_ps(d1 + p), x2 = _mm512_loadu_ps(d2 + p);
            const float *q = pl + p;
            WG_TAP(0) WG_TAP(1) WG_TAP(2) WG_TAP(3) WG_TAP(4) WG_TAP(5) WG_TAP(6) WG_TAP(7) WG_TAP(8)
        }
    }
    WG_SUM(0) WG_SUM(1) WG_SUM(2) WG_SUM(3) WG_SUM(4) WG_SUM(5) WG_SUM(6) WG_SUM(7) WG_SUM(8)
}
#undef WG_DECL
#undef WG_TAP
#undef WG_SUM

/* The 8 lanes of v added in order. */
AVX2 static inline float lanes8(__m256 v) {
    float l[8], t = 0;
    _mm256_storeu_ps(l, v);
    for (int j = 0; j < 8; j++) t += l[j];
    return t;
}

/* AVX2 + FMA: one row of taps (dy = 0, 1, 2) at a time, 3 output channels × 3 taps = 9
 * accumulators, 3 gradient rows and a plane vector in the 16 ymm registers. */
AVX2 static void wgrad_avx2(const float *planes, const float *grads, int group, int cin, int kpad, geom g,
                            size_t lr, int i, int k0, double acc[WKB][9]) {
    for (int dy = 0; dy < 3; dy++) {
        __m256 a[WKB][3];
        for (int kk = 0; kk < WKB; kk++)
            for (int t = 0; t < 3; t++) a[kk][t] = _mm256_setzero_ps();
        const size_t o0 = (size_t)g.offs[3 * dy], o1 = (size_t)g.offs[3 * dy + 1], o2 = (size_t)g.offs[3 * dy + 2];
        for (int img = 0; img < group; img++) {
            const float *pl = planes + ((size_t)img * cin + i) * g.plane;
            const float *d0 = grads + ((size_t)img * kpad + k0) * lr, *d1 = d0 + lr, *d2 = d1 + lr;
            for (size_t p = 0; p < lr; p += 8) {
                __m256 x0 = _mm256_loadu_ps(d0 + p), x1 = _mm256_loadu_ps(d1 + p), x2 = _mm256_loadu_ps(d2 + p);
                const float *q = pl + p;
                __m256 v0 = _mm256_loadu_ps(q + o0), v1 = _mm256_loadu_ps(q + o1), v2 = _mm256_loadu_ps(q + o2);
                a[0][0] = _mm256_fmadd_ps(x0, v0, a[0][0]); a[1][0] = _mm256_fmadd_ps(x1, v0, a[1][0]);
                a[2][0] = _mm256_fmadd_ps(x2, v0, a[2][0]); a[0][1] = _mm256_fmadd_ps(x0, v1, a[0][1]);
                a[1][1] = _mm256_fmadd_ps(x1, v1, a[1][1]); a[2][1] = _mm256_fmadd_ps(x2, v1, a[2][1]);
                a[0][2] = _mm256_fmadd_ps(x0, v2, a[0][2]); a[1][2] = _mm256_fmadd_ps(x1, v2, a[1][2]);
                a[2][2] = _mm256_fmadd_ps(x2, v2, a[2][2]);
            }
        }
        for (int kk = 0; kk < WKB; kk++)
            for (int t = 0; t < 3; t++) acc[kk][3 * dy + t] += lanes8(a[kk][t]);
    }
}
#endif

void tk_conv3x3_backward_weight(const float *x, const float *dy, int n, int cin, int h, int w, int stride,
                                int cout, float *dweight, float *scratch) {
    if (n <= 0) return;
    geom g = make_geom(h, w, stride);
    size_t lr = round_up(g.len, 16), hw = (size_t)g.h * g.w, in = (size_t)h * w;
    int kpad = (int)round_up((size_t)cout, WKB);
    int group = wgrad_group(n, cin, cout, g);
    float *planes = scratch;
    float *grads = planes + (size_t)group * cin * g.plane + SLACK;
    /* Borders, the extra columns of each gradient row and the padding rows stay zero. */
    memset(scratch, 0, sizeof(float) * wgrad_scratch(n, cin, cout, g));
    int isa = tk_isa();
    for (int n0 = 0; n0 < n; n0 += group) {
        int m = n - n0 < group ? n - n0 : group;
        for (int img = 0; img < m; img++) {
            fill_planes(x + (size_t)(n0 + img) * cin * in, cin, g, planes + (size_t)img * cin * g.plane);
            for (int k = 0; k < cout; k++) {
                const float *src = dy + ((size_t)(n0 + img) * cout + k) * hw;
                float *dst = grads + ((size_t)img * kpad + k) * lr;
                for (int r = 0; r < g.h; r++) memcpy(dst + (size_t)r * g.wp, src + (size_t)r * g.w, sizeof(float) * g.w);
            }
        }
        for (int k0 = 0; k0 < cout; k0 += WKB)
            for (int i = 0; i < cin; i++) {
                double acc[WKB][9] = {{0}};
#if defined(__x86_64__)
                if (isa == TK_ISA_AVX512) wgrad_avx512(planes, grads, m, cin, kpad, g, lr, i, k0, acc); else
                if (isa == TK_ISA_AVX2) wgrad_avx2(planes, grads, m, cin, kpad, g, lr, i, k0, acc); else
#endif
                wgrad_portable(planes, grads, m, cin, kpad, g, lr, i, k0, acc);
                (void)isa;
                for (int kk = 0; kk < WKB && k0 + kk < cout; kk++)
                    for (int t = 0; t < 9; t++)
                        dweight[((size_t)(k0 + kk) * cin + i) * 9 + t] += (float)acc[kk][t];
            }
    }
}

/*
 * 1×1 stride-2 layers without padding (a ResNet's projection shortcuts): y[k][r][c] =
 * Σ_i W[k][i]·x[i][2r][2c]. The forward pass and the input gradient run the register-blocked
 * kernel above with one tap over the subsampled planes (oh×ow, contiguous); the input gradient
 * writes the even rows' even columns of dx and zeroes the rest. The weight gradient is one
 * register-tiled product over every image's subsampled input and output gradient.
 */
static geom p2_geom(int h, int w) {
    geom g;
    memset(&g, 0, sizeof g);
    g.ih = h; g.iw = w; g.stride = 2; g.taps = 1;
    g.h = (h - 1) / 2 + 1; g.w = g.wp = (w - 1) / 2 + 1;
    g.plane = g.quarter = g.len = (size_t)g.h * g.w;
    return g;
}

size_t tk_conv1x1_s2_scratch(int n, int cin, int cout, int h, int w) {
    geom g = p2_geom(h, w);
    size_t lr = round_up(g.len, PB), lp = round_up(g.len, 16);
    size_t fwd = round_up((size_t)cout, KB) * cin + (size_t)cin * g.plane + SLACK + KB * lr;
    size_t bwd = round_up((size_t)cin, KB) * cout + (size_t)cout * g.plane + SLACK + KB * lr;
    size_t wg = (size_t)(cin + cout) * (size_t)(n > 0 ? n : 1) * lp + SLACK;
    size_t m = fwd > bwd ? fwd : bwd;
    return m > wg ? m : wg;
}

/* Rows 0, 2, 4, … and of each its columns 0, 2, 4, … of an h×w plane, as an oh×ow plane. */
static void subsample(const float *src, geom g, float *dst) {
    for (int r = 0; r < g.h; r++) {
        const float *row = src + (size_t)(2 * r) * g.iw;
        float *d = dst + (size_t)r * g.w;
        for (int c = 0; c < g.w; c++) d[c] = row[2 * c];
    }
}

/* A 1×1 stride-2 pass through the blocked kernel: `outputs` channels from `inputs` channels of
 * oh×ow planes (subsampled x for the forward pass, dy for the input gradient), weights packed
 * [block of 8 outputs][input][8]; the input gradient's planes are spread over dx's even pixels. */
static void pointwise(const float *src, int n, int inputs, int h, int w, const float *weight, int outputs,
                      int transpose, float *dst, float *scratch) {
    geom g = p2_geom(h, w);
    int blocks = (outputs + KB - 1) / KB;
    size_t lr = round_up(g.len, PB), in = (size_t)h * w;
    float *packed = scratch, *planes = packed + (size_t)blocks * KB * inputs, *out = planes + (size_t)inputs * g.plane + SLACK;
    for (int b = 0; b < blocks; b++)
        for (int i = 0; i < inputs; i++)
            for (int j = 0; j < KB; j++) {
                int o = b * KB + j;
                packed[((size_t)b * inputs + i) * KB + j] =
                    o < outputs ? (transpose ? weight[(size_t)i * outputs + o] : weight[(size_t)o * inputs + i]) : 0;
            }
    memset(planes + (size_t)inputs * g.plane, 0, sizeof(float) * SLACK);
    for (int img = 0; img < n; img++) {
        for (int i = 0; i < inputs; i++) {
            if (transpose) memcpy(planes + (size_t)i * g.plane, src + ((size_t)img * inputs + i) * g.len, sizeof(float) * g.len);
            else subsample(src + ((size_t)img * inputs + i) * in, g, planes + (size_t)i * g.plane);
        }
        for (int b = 0; b < blocks; b++) {
            const float *wb = packed + (size_t)b * inputs * KB;
            run_block(planes, inputs, g, wb, out, lr);
            for (int j = 0; j < KB && b * KB + j < outputs; j++) {
                const float *s = out + (size_t)j * lr;
                if (!transpose) {
                    memcpy(dst + ((size_t)img * outputs + b * KB + j) * g.len, s, sizeof(float) * g.len);
                    continue;
                }
                float *d = dst + ((size_t)img * outputs + b * KB + j) * in;
                memset(d, 0, sizeof(float) * in);
                for (int r = 0; r < g.h; r++)
                    for (int c = 0; c < g.w; c++) d[(size_t)(2 * r) * w + 2 * c] = s[(size_t)r * g.w + c];
            }
        }
    }
}

void tk_conv1x1_s2_forward(const float *x, int n, int cin, int h, int w, const float *weight, int cout, float *y,
                           float *scratch) {
    pointwise(x, n, cin, h, w, weight, cout, 0, y, scratch);
}

void tk_conv1x1_s2_backward_data(const float *dy, int n, int cin, int h, int w, const float *weight, int cout,
                                 float *dx, float *scratch) {
    pointwise(dy, n, cout, h, w, weight, cin, 1, dx, scratch);
}

/* z[r][s] += Σ_t a[r][t]·b[s][t] for an R × S block, rows `ld` apart, T a multiple of 16; lanes
 * summed in a fixed order. */
#define PW_R 4
#define PW_S 4
static void pw_tile_portable(const float *a, const float *b, size_t ld, size_t T, int R, int S, float *z,
                                      int ldz) {
    for (int r = 0; r < R; r++)
        for (int s = 0; s < S; s++) {
            float lanes[16] = {0};
            for (size_t t = 0; t < T; t += 16)
                for (int j = 0; j < 16; j++) lanes[j] += a[(size_t)r * ld + t + j] * b[(size_t)s * ld + t + j];
            float total = 0;
            for (int j = 0; j < 16; j++) total += lanes[j];
            z[(size_t)r * ldz + s] += total;
        }
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void pw_tile_avx512(const float *a, const float *b, size_t ld, size_t T,
                                                              int R, int S, float *z, int ldz) {
    if (R != PW_R || S != PW_S) { pw_tile_portable(a, b, ld, T, R, S, z, ldz); return; }
    __m512 acc[PW_R][PW_S];
    for (int r = 0; r < PW_R; r++)
        for (int s = 0; s < PW_S; s++) acc[r][s] = _mm512_setzero_ps();
    for (size_t t = 0; t < T; t += 16) {
        __m512 av[PW_R], bv[PW_S];
        for (int r = 0; r < PW_R; r++) av[r] = _mm512_loadu_ps(a + (size_t)r * ld + t);
        for (int s = 0; s < PW_S; s++) bv[s] = _mm512_loadu_ps(b + (size_t)s * ld + t);
        for (int r = 0; r < PW_R; r++)
            for (int s = 0; s < PW_S; s++) acc[r][s] = _mm512_fmadd_ps(av[r], bv[s], acc[r][s]);
    }
    for (int r = 0; r < PW_R; r++)
        for (int s = 0; s < PW_S; s++) {
            float lanes[16], total = 0;
            _mm512_storeu_ps(lanes, acc[r][s]);
            for (int j = 0; j < 16; j++) total += lanes[j];
            z[(size_t)r * ldz + s] += total;
        }
}

/* AVX2 + FMA: the 4×4 block as two 4×2 halves (8 accumulators, 2 + 1 loaded vectors). */
AVX2 static void pw_tile_avx2(const float *a, const float *b, size_t ld, size_t T, int R, int S, float *z, int ldz) {
    if (R != PW_R || S != PW_S) { pw_tile_portable(a, b, ld, T, R, S, z, ldz); return; }
    for (int s0 = 0; s0 < PW_S; s0 += 2) {
        __m256 acc[PW_R][2];
        for (int r = 0; r < PW_R; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
        const float *b0 = b + (size_t)s0 * ld, *b1 = b0 + ld;
        for (size_t t = 0; t < T; t += 8) {
            __m256 v0 = _mm256_loadu_ps(b0 + t), v1 = _mm256_loadu_ps(b1 + t);
            for (int r = 0; r < PW_R; r++) {
                __m256 av = _mm256_loadu_ps(a + (size_t)r * ld + t);
                acc[r][0] = _mm256_fmadd_ps(av, v0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(av, v1, acc[r][1]);
            }
        }
        for (int r = 0; r < PW_R; r++) {
            z[(size_t)r * ldz + s0] += lanes8(acc[r][0]);
            z[(size_t)r * ldz + s0 + 1] += lanes8(acc[r][1]);
        }
    }
}
#endif

/* The weight gradient's packed operands: xs[i][img][lp] (subsampled input) and ds[k][img][lp]
 * (output gradient), zero past each plane's end, for images [n0, n1) of the n. */
void tk_conv1x1_s2_wgrad_pack(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *scratch,
                              int n0, int n1) {
    geom g = p2_geom(h, w);
    size_t lp = round_up(g.len, 16), T = (size_t)n * lp, in = (size_t)h * w;
    float *xs = scratch, *ds = xs + (size_t)cin * T;
    for (int img = n0; img < n1 && img < n; img++) {
        for (int i = 0; i < cin; i++) {
            float *d = xs + (size_t)i * T + (size_t)img * lp;
            subsample(x + ((size_t)img * cin + i) * in, g, d);
            memset(d + g.len, 0, sizeof(float) * (lp - g.len));
        }
        for (int k = 0; k < cout; k++) {
            float *d = ds + (size_t)k * T + (size_t)img * lp;
            memcpy(d, dy + ((size_t)img * cout + k) * g.len, sizeof(float) * g.len);
            memset(d + g.len, 0, sizeof(float) * (lp - g.len));
        }
    }
}

/* Rows [k0, k1) of dweight (k0 a multiple of 4) from the packed operands of all n images. */
void tk_conv1x1_s2_wgrad_rows(int n, int cin, int h, int w, int cout, float *dweight, const float *scratch, int k0,
                              int k1) {
    geom g = p2_geom(h, w);
    size_t lp = round_up(g.len, 16), T = (size_t)n * lp;
    const float *xs = scratch, *ds = xs + (size_t)cin * T;
    int isa = tk_isa();
    if (k1 > cout) k1 = cout;
    for (int r0 = k0; r0 < k1; r0 += PW_R)
        for (int i0 = 0; i0 < cin; i0 += PW_S) {
            int R = k1 - r0 < PW_R ? k1 - r0 : PW_R, S = cin - i0 < PW_S ? cin - i0 : PW_S;
            const float *a = ds + (size_t)r0 * T, *b = xs + (size_t)i0 * T;
            float *z = dweight + (size_t)r0 * cin + i0;
#if defined(__x86_64__)
            if (isa == TK_ISA_AVX512) { pw_tile_avx512(a, b, T, T, R, S, z, cin); continue; }
            if (isa == TK_ISA_AVX2) { pw_tile_avx2(a, b, T, T, R, S, z, cin); continue; }
#endif
            (void)isa;
            pw_tile_portable(a, b, T, T, R, S, z, cin);
        }
}
