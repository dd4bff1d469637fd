/*
 * Winograd F(2×2, 3×3) for 3×3, padding-1, stride-1 convolutions (Lavin & Gray 2016).
 *
 * Each 2×2 block of outputs ("tile") reads a 4×4 block of the zero-padded input. With
 *   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],  G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1],
 *   Aᵀ = [1 1 1 0; 0 1 −1 −1],
 * a tile of output channel o is Aᵀ[Σ_c (G w_oc Gᵀ) ⊙ (Bᵀ d_c B)]A: 16 multiply-adds per
 * input channel instead of 36. Grouped by the 16 positions ξ of the 4×4 products, the sum
 * over channels is 16 independent matrix products M_ξ (cout × tiles) = W_ξ (cout × cin) ·
 * U_ξ (cin × tiles), which the kernels below run register-blocked, vectorized along tiles.
 * The input gradient is the same computation with the kernel flipped and the channel roles
 * swapped; the weight gradient is its adjoint: Σ_tiles Gᵀ[(A dy Aᵀ) ⊙ (Bᵀ d B)]G.
 *
 * Transforms are separable: the row pass reads a padded row of a channel plane and writes 4
 * values per tile column (even and odd columns come from two contiguous loads and a shuffle);
 * the column pass combines rows into the 16 values of each tile, a flat vector loop over tiles.
 * The forward pass (and so the input gradient) runs the row passes of a group of images, then
 * takes blocks of 48 tiles through the column pass, the 16 products and the output column pass
 * while the block's U and M are in cache, then the output row passes. The weight gradient
 * transforms a group of about 256 tiles whole and sums the products over them in registers.
 * Tiles of a group's images sit side by side, so the products see enough columns.
 *
 * F(4×4, 3×3), further below, follows the same plan with 6×6 tiles and 36 products: forward,
 * input gradient and weight gradient; on planes 9 to 32 wide its row passes hold two or four
 * tile rows per vector (rows taken as 16 or 32 wide), on planes up to 8 wide eight images.
 *
 * One source, written with vector extensions, compiled three times: for AVX-512, for AVX2 + FMA
 * and as portable C, chosen by tk_isa(). A vector of 16 floats is one zmm register, two ymm or
 * four xmm; the products' register tiles differ by instruction set (NARROW below), the data
 * layout does not.
 */
#include "ckernels.h"

#include <string.h>

#pragma clang fp contract(fast)
/* Vectors pass by value only between always-inlined helpers, so no call ever crosses the ABI
 * boundary the warning is about. */
#pragma clang diagnostic ignored "-Wpsabi"

typedef float v16 __attribute__((vector_size(64), aligned(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

#define LD(p) (*(const v16u *)(p))
#define ST(p, v) (*(v16u *)(p) = (v))
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("clang loop unroll(full)")

#if defined(__x86_64__) && defined(__clang__)
#define AVX512 __attribute__((target("avx512f")))
#define AVX2_W __attribute__((target("avx2,fma")))
#else
#define AVX512
#define AVX2_W
#endif

/* BLOCK_WIDE: input channels from which forward blocks hold FV vectors of tiles (else one);
 * ROW_FLOATS: cap on a forward group's row-pass buffers; WGRAD_TILES, WGRAD_FLOATS: target tiles
 * and cap on U + V of a weight-gradient group; FR × FV: forward register tile (output rows ×
 * vectors of 16 tiles); WR × WS: weight-gradient register tile (output × input channels). */
enum { BLOCK_WIDE = 16, ROW_FLOATS = 1 << 17, WGRAD_TILES = 256, WGRAD_FLOATS = 1 << 18, FR = 8, FV = 3, WR = 4, WS = 4 };

/* With 16 ymm registers (AVX2) or xmm (portable), NARROW = 1: forward register tiles of NFR
 * output rows × one vector of 16 tiles (12 ymm accumulators), weight-gradient tiles of NWR × NWS
 * channels over vectors of 8 (12 accumulators). */
enum { NFR = 6, NWR = 4, NWS = 3 };

static size_t rup(size_t v, size_t m) { return (v + m - 1) / m * m; }

typedef struct {
    int h, w, th, tw; /* plane height, width; tiles down and across */
    int tiles;        /* th·tw: tiles per image plane */
    int twp;          /* tw rounded up to 16 */
    int vw;           /* row width the packed F(4×4, 3×3) passes take (4·tw, ≥ w), else w */
    size_t rb;        /* floats of one row-pass buffer (one kc, one row parity) */
} wgeom;

static wgeom make_wgeom(int h, int w) {
    wgeom g;
    g.h = h; g.w = w; g.th = (h + 1) / 2; g.tw = (w + 1) / 2; g.vw = w;
    g.tiles = g.th * g.tw;
    g.twp = (int)rup((size_t)g.tw, 16);
    g.rb = (size_t)(g.th + 1) * g.tw + g.twp + 16;
    return g;
}

/* Row pitch of V and U in the weight gradient for a group of `images`: the tiles, rounded up,
 * plus room for the last image's vector tail. */
static size_t pitch(wgeom g, int images) { return rup((size_t)images * g.tiles, 16) + 16; }

/* Floats from one transformed position ξ to the next in U, V and M (ch rows of `p` floats): one
 * cache line more than the rows, so the 16 or 36 rows a column pass writes at once fall in
 * different cache sets (with ch·p a multiple of 1024 they would all share one). */
static size_t xstride(int ch, size_t p) { return (size_t)ch * p + 16; }

/* Vectors of 16 tiles per forward block: three, so each broadcast weight feeds three vectors
 * (measured faster than one from 16 channels up, where one block's U and M are 48 KiB each and
 * more); one for layers narrower than that. */
static int block_vectors(int cin) { return cin >= BLOCK_WIDE ? FV : 1; }

/* Forward images per group: their tiles should fill whole blocks (a last block of one vector
 * runs the products at a third of the speed), within ROW_FLOATS of row-pass buffers. One image
 * when it already spans several blocks; else the fewest images whose tiles make whole blocks,
 * or failing that waste the fewest vector lanes. */
static int images_per_block_group(wgeom g, int B, size_t image) { /* B tiles per block, image: row-pass floats */
    if (g.tiles >= 4 * B) return 1;
    int cap = (int)(ROW_FLOATS / (image ? image : 1));
    if (cap > 8) cap = 8;
    if (cap < 1) return 1;
    int best = 1;
    double waste = 1e9;
    for (int per = 1; per <= cap; per++) {
        size_t T = (size_t)per * g.tiles;
        if (T % B == 0) return per;
        double w = (double)(rup(T, 16) - T) / (double)T;
        if (w < waste - 1e-12) { waste = w; best = per; }
    }
    return best;
}

/* Blocks of 16·block_vectors(cin) tiles; 8 row-pass buffers per channel. */
static int forward_images(wgeom g, int cin, int cout) {
    return images_per_block_group(g, 16 * block_vectors(cin), (size_t)(cin + cout) * 8 * g.rb);
}

/* Weight-gradient images per group: about WGRAD_TILES tiles, U and V (X transformed values per
 * tile and channel) within WGRAD_FLOATS. (Groups sized to half of a 512 KiB L2 cache, one image
 * at 16 channels and 28×28, cut the L2 misses of a cache model by 80% but ran slower with two
 * threads on Zen 3: more lane sums and more group sums to add.) */
static int wgrad_images(int cin, int cout, wgeom g, int X) {
    int per = WGRAD_TILES / (g.tiles > 0 ? g.tiles : 1);
    if (per < 1) per = 1;
    size_t image = (size_t)X * (size_t)(cin + cout) * (size_t)g.tiles;
    size_t cap = WGRAD_FLOATS / (image ? image : 1);
    if (cap < 1) cap = 1;
    return (size_t)per > cap ? (int)cap : per;
}

int tk_wino_wgrad_group(int cin, int cout, int h, int w) { return wgrad_images(cin, cout, make_wgeom(h, w), 16); }

/* A staged plane and room for the last row's whole-vector reads and writes. */
static size_t stage_floats(wgeom g) { return (size_t)g.h * g.w + 2 * (size_t)g.twp + 64; }

/* Row pitch of a block's U and M: room for the vector tails of images' segments unless the
 * images' tiles fill whole vectors. */
static size_t block_pitch(wgeom g, int cin) { return 16 * (size_t)block_vectors(cin) + (g.tiles % 16 == 0 ? 0 : 16); }

/* Forward: stage, row passes of the group's input planes (cin each), output column passes (cout
 * each), one block's U and M. */
static size_t forward_floats(int cin, int cout, wgeom g) {
    size_t per = (size_t)forward_images(g, cin, cout);
    size_t bp = block_pitch(g, cin);
    return stage_floats(g) + per * (size_t)(cin + cout) * 8 * g.rb + 16 * (xstride(cin, bp) + xstride(cout, bp)) + 64;
}

/* Weight gradient: stage, one plane's row pass, the group's U and V. */
static size_t wgrad_floats(int cin, int cout, wgeom g) {
    size_t p = pitch(g, wgrad_images(cin, cout, g, 16));
    return stage_floats(g) + 8 * g.rb + 16 * (xstride(cin, p) + xstride(cout, p)) + 64;
}

size_t tk_wino_scratch(int cin, int cout, int h, int w) {
    wgeom g = make_wgeom(h, w);
    size_t a = forward_floats(cin, cout, g), b = forward_floats(cout, cin, g), c = wgrad_floats(cin, cout, g);
    size_t m = a > b ? a : b;
    return m > c ? m : c;
}

/* ---- weight transforms ---- */

/* t[ξ] = (G k Gᵀ)_ξ for 16 kernels at once, k[i] holding tap i of each. */
INLINE void kernel_transform16(const v16 *k, v16 *t) {
#pragma clang fp contract(off)
    v16 r[4][3];
    for (int j = 0; j < 3; j++) {
        v16 a = k[j], b = k[3 + j], c = k[6 + j];
        r[0][j] = a; r[1][j] = 0.5f * (a + b + c); r[2][j] = 0.5f * (a - b + c); r[3][j] = c;
    }
    for (int i = 0; i < 4; i++) {
        v16 a = r[i][0], b = r[i][1], c = r[i][2];
        t[i * 4 + 0] = a; t[i * 4 + 1] = 0.5f * (a + b + c); t[i * 4 + 2] = 0.5f * (a - b + c); t[i * 4 + 3] = c;
    }
}

/* t[6j + k] = (G k Gᵀ)[j][k] for 16 kernels at once, k[i] holding tap i of each. */
INLINE void kernel_transform16_4(const v16 *k, v16 *t) {
#pragma clang fp contract(off)
    v16 r[6][3];
    for (int j = 0; j < 3; j++) {
        v16 a = k[j], b = k[3 + j], c = k[6 + j];
        r[0][j] = a * 0.25f;
        r[1][j] = (a + b + c) * (-1.0f / 6);
        r[2][j] = (a - b + c) * (-1.0f / 6);
        r[3][j] = a * (1.0f / 24) + b * (1.0f / 12) + c * (1.0f / 6);
        r[4][j] = a * (1.0f / 24) - b * (1.0f / 12) + c * (1.0f / 6);
        r[5][j] = c;
    }
    for (int i = 0; i < 6; i++) {
        v16 a = r[i][0], b = r[i][1], c = r[i][2];
        t[i * 6 + 0] = a * 0.25f;
        t[i * 6 + 1] = (a + b + c) * (-1.0f / 6);
        t[i * 6 + 2] = (a - b + c) * (-1.0f / 6);
        t[i * 6 + 3] = a * (1.0f / 24) + b * (1.0f / 12) + c * (1.0f / 6);
        t[i * 6 + 4] = a * (1.0f / 24) - b * (1.0f / 12) + c * (1.0f / 6);
        t[i * 6 + 5] = c;
    }
}

/* Transformed kernels, rows of wt (fixed ξ and first index) filled 16 entries at a time:
 * forward: wt[ξ][ci][co] from w[co][ci]; flip: wt[ξ][co][ci] from w[co][ci] rotated 180°. */
INLINE void weights_impl(const int X, const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1) {
    int K = flip ? cout : cin, N = flip ? cin : cout;
    for (int kidx = k0; kidx < k1 && kidx < K; kidx++)
        for (int n0 = 0; n0 < N; n0 += 16) {
            int lanes = N - n0 < 16 ? N - n0 : 16;
            float taps[9][16] __attribute__((aligned(64)));
            if (lanes < 16) memset(taps, 0, sizeof taps);
            /* lane l's kernel: forward w[n0 + l][kidx], flipped w[kidx][n0 + l] rotated 180° */
            const float *k = weight + (flip ? ((size_t)kidx * cin + n0) * 9 : ((size_t)n0 * cin + kidx) * 9);
            size_t step = flip ? 9 : (size_t)cin * 9;
            if (flip)
                for (int l = 0; l < lanes; l++, k += step)
                    for (int i = 0; i < 9; i++) taps[i][l] = k[8 - i];
            else
                for (int l = 0; l < lanes; l++, k += step)
                    for (int i = 0; i < 9; i++) taps[i][l] = k[i];
            v16 kv[9], t[36];
            for (int i = 0; i < 9; i++) kv[i] = LD(taps[i]);
            if (X == 16) kernel_transform16(kv, t); else kernel_transform16_4(kv, t);
            for (int x = 0; x < X; x++) {
                float *dst = wt + ((size_t)x * K + kidx) * N + n0;
                if (lanes == 16) ST(dst, t[x]);
                else for (int l = 0; l < lanes; l++) dst[l] = t[x][l];
            }
        }
}

/* The weight transforms and the weight gradient's last step run once per layer and step on
 * every kernel, so they are compiled per instruction set too (without multiply-add contraction:
 * the same bits as the portable code, whichever set runs). */
#define ISA_DISPATCH(name, body, params, args)                                                       \
    AVX512 static void name##_avx512 params { body args; }                                           \
    AVX2_W static void name##_avx2 params { body args; }                                             \
    static void name##_portable params { body args; }                                                \
    static void name##_run params {                                                                  \
        switch (tk_isa()) {                                                                          \
        case TK_ISA_AVX512: name##_avx512 args; return;                                              \
        case TK_ISA_AVX2: name##_avx2 args; return;                                                  \
        default: name##_portable args; return;                                                       \
        }                                                                                            \
    }
#define WEIGHTS_PARAMS (const int X, const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1)
#define WEIGHTS_ARGS (X, weight, cout, cin, flip, wt, k0, k1)
ISA_DISPATCH(weights, weights_impl, WEIGHTS_PARAMS, WEIGHTS_ARGS)

void tk_wino_weights(const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1) {
    weights_run(16, weight, cout, cin, flip, wt, k0, k1);
}

/* Gᵀ m G for F(2×2, 3×3)'s 16 values of one kernel (scalars or vectors of 16 kernels alike). */
#define FINISH2(T, m, o)                                                                                    \
    do {                                                                                                    \
        T r_[3][4];                                                                                         \
        for (int j = 0; j < 4; j++) {                                                                       \
            T a = m[j], b = m[4 + j], c = m[8 + j], d = m[12 + j];                                          \
            r_[0][j] = a + 0.5f * (b + c); r_[1][j] = 0.5f * (b - c); r_[2][j] = 0.5f * (b + c) + d;        \
        }                                                                                                   \
        for (int i = 0; i < 3; i++) {                                                                       \
            T a = r_[i][0], b = r_[i][1], c = r_[i][2], d = r_[i][3];                                       \
            o[i * 3 + 0] = a + 0.5f * (b + c); o[i * 3 + 1] = 0.5f * (b - c); o[i * 3 + 2] = 0.5f * (b + c) + d; \
        }                                                                                                   \
    } while (0)

/* ---- transforms of planes (inlined into both instruction-set versions) ---- */

#define EVEN 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ODD 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31

typedef int i16v __attribute__((vector_size(64)));

/* Lanes l with lo + l < w kept, the rest zeroed (one row's columns in a vector). */
INLINE v16 keep_below(v16 v, int lo, int w) {
    i16v lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    i16v keep = (lane + lo) < w; /* −1 where true */
    return (v16)((i16v)v & keep);
}

/* Copies an h×w plane into `stage` (same layout) with vector moves: its rows can then be read a
 * whole vector pair at a time without reading past the caller's tensor. */
INLINE void stage_plane(const float *x, size_t count, float *stage) {
    size_t i = 0;
    for (; i + 16 <= count; i += 16) ST(stage + i, LD(x + i));
    for (; i < count; i++) stage[i] = x[i];
}

/* Row y's padded columns 2tx..2tx+3 (tx = c..c+15) of a staged plane, as p0..p3: padded column j is
 * x[y][j − 1], zero outside the row. */
INLINE void padded_quads(const float *row, int w, int c, v16 *p) {
    v16 z = (v16){0};
    /* x[2tx] and x[2tx+1] for the 16 tile columns, and the neighbours on each side */
    v16 a = keep_below(LD(row + 2 * c), 2 * c, w), b = keep_below(LD(row + 2 * c + 16), 2 * c + 16, w);
    v16 ev = __builtin_shufflevector(a, b, EVEN), od = __builtin_shufflevector(a, b, ODD);
    float before = c > 0 ? row[2 * c - 1] : 0.0f, after = 2 * c + 32 < w ? row[2 * c + 32] : 0.0f;
    v16 left = z, right = z;
    left[15] = before; right[0] = after;
    p[0] = __builtin_shufflevector(left, od, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
    p[1] = ev;
    p[2] = od;
    p[3] = __builtin_shufflevector(ev, right, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
}

/* Row pass of an input plane (h×w): rbp[(2·kc + r mod 2)·rb + ⌊r/2⌋·tw + tx] = (d Bᵀ-row kc) of padded
 * row r at tile column tx. Rows are written in order with whole vectors; each one's tail spills
 * into the next row of the same parity, which overwrites it. */
INLINE void in_rows(const float *x, wgeom g, float *stage, float *rbp) {
    stage_plane(x, (size_t)g.h * g.w, stage);
    int rows = 2 * g.th + 2;
    for (int r = 0; r < rows; r++) {
        float *d0 = rbp + (size_t)(r & 1) * g.rb + (size_t)(r >> 1) * g.tw;
        float *d1 = d0 + 2 * g.rb, *d2 = d1 + 2 * g.rb, *d3 = d2 + 2 * g.rb;
        int y = r - 1;
        if (y < 0 || y >= g.h) {
            v16 z = (v16){0};
            for (int c = 0; c < g.tw; c += 16) { ST(d0 + c, z); ST(d1 + c, z); ST(d2 + c, z); ST(d3 + c, z); }
            continue;
        }
        const float *row = stage + (size_t)y * g.w;
        for (int c = 0; c < g.tw; c += 16) {
            v16 p[4];
            padded_quads(row, g.w, c, p);
            ST(d0 + c, p[0] - p[2]); ST(d1 + c, p[1] + p[2]); ST(d2 + c, p[2] - p[1]); ST(d3 + c, p[1] - p[3]);
        }
    }
}

/* Column pass: tiles [t0, t1) of the plane → u[ξ·xs + (t − t0)] (whole vectors: up to 15 entries
 * past t1 − t0 are written too). */
INLINE void in_cols(const float *rbp, wgeom g, int t0, int t1, float *u, size_t xs) {
    for (int kc = 0; kc < 4; kc++) {
        const float *e = rbp + (size_t)(kc * 2) * g.rb, *o = e + g.rb;
        float *u0 = u + (size_t)kc * xs - t0, *u1 = u0 + 4 * xs, *u2 = u1 + 4 * xs, *u3 = u2 + 4 * xs;
        for (int t = t0; t < t1; t += 16) {
            v16 d0 = LD(e + t), d1 = LD(o + t), d2 = LD(e + t + g.tw), d3 = LD(o + t + g.tw);
            ST(u0 + t, d0 - d2); ST(u1 + t, d1 + d2); ST(u2 + t, d2 - d1); ST(u3 + t, d1 - d3);
        }
    }
}

/* Row pass of an output-gradient plane (h×w), 2×2 tiles: rbp[(2·kc + r mod 2)·rb + ⌊r/2⌋·tw + tx]
 * = (A e)_kc of row r's pair (e0, e1) at tile column tx. */
INLINE void grad_rows(const float *dy, wgeom g, float *stage, float *rbp) {
    stage_plane(dy, (size_t)g.h * g.w, stage);
    int rows = 2 * g.th;
    for (int r = 0; r < rows; r++) {
        float *d0 = rbp + (size_t)(r & 1) * g.rb + (size_t)(r >> 1) * g.tw;
        float *d1 = d0 + 2 * g.rb, *d2 = d1 + 2 * g.rb, *d3 = d2 + 2 * g.rb;
        if (r >= g.h) {
            v16 z = (v16){0};
            for (int c = 0; c < g.tw; c += 16) { ST(d0 + c, z); ST(d1 + c, z); ST(d2 + c, z); ST(d3 + c, z); }
            continue;
        }
        const float *row = stage + (size_t)r * g.w;
        for (int c = 0; c < g.tw; c += 16) {
            v16 a = keep_below(LD(row + 2 * c), 2 * c, g.w), b = keep_below(LD(row + 2 * c + 16), 2 * c + 16, g.w);
            v16 e0 = __builtin_shufflevector(a, b, EVEN), e1 = __builtin_shufflevector(a, b, ODD);
            ST(d0 + c, e0); ST(d1 + c, e0 + e1); ST(d2 + c, e0 - e1); ST(d3 + c, -e1);
        }
    }
}

/* Column pass of the output gradient: v[ξ·xs + t] = (A dy_t Aᵀ)_ξ for every tile of the plane. */
INLINE void grad_cols(const float *rbp, wgeom g, float *v, size_t xs) {
    for (int kc = 0; kc < 4; kc++) {
        const float *e = rbp + (size_t)(kc * 2) * g.rb, *o = e + g.rb;
        float *v0 = v + (size_t)kc * xs, *v1 = v0 + 4 * xs, *v2 = v1 + 4 * xs, *v3 = v2 + 4 * xs;
        for (int t = 0; t < g.tiles; t += 16) {
            v16 f0 = LD(e + t), f1 = LD(o + t);
            ST(v0 + t, f0); ST(v1 + t, f0 + f1); ST(v2 + t, f0 - f1); ST(v3 + t, -f1);
        }
    }
}

/* Output column pass: m[ξ·xs + (t − t0)] for tiles [t0, t1) of one output plane → sbp[(4·i + kc)·rb + t]
 * = (Aᵀ m_t)[i][kc] (whole vectors: up to 15 entries past t1 are written too). */
INLINE void out_cols(const float *m, size_t xs, wgeom g, int t0, int t1, float *sbp) {
    for (int kc = 0; kc < 4; kc++) {
        const float *m0 = m + (size_t)kc * xs - t0, *m1 = m0 + 4 * xs, *m2 = m1 + 4 * xs, *m3 = m2 + 4 * xs;
        float *s0 = sbp + (size_t)kc * g.rb, *s1 = s0 + 4 * g.rb;
        for (int t = t0; t < t1; t += 16) {
            v16 a = LD(m0 + t), b = LD(m1 + t), c = LD(m2 + t), d = LD(m3 + t);
            ST(s0 + t, a + b + c); ST(s1 + t, b - c - d);
        }
    }
}

/* Output row pass: y row 2ty+i, columns 2tx (even) and 2tx+1 (odd) from sbp. Rows go to the stage
 * plane in order with whole vectors (each one's tail is overwritten by the next row), and the
 * plane is copied out at the end; rows of a multiple of 32 are written in place. */
INLINE void out_rows(const float *sbp, wgeom g, float *stage, float *y) {
    int direct = g.w % 32 == 0;
    for (int r = 0; r < g.h; r++) {
        size_t base = (size_t)(r >> 1) * g.tw;
        const float *q0 = sbp + (size_t)((r & 1) * 4) * g.rb + base, *q1 = q0 + g.rb, *q2 = q1 + g.rb, *q3 = q2 + g.rb;
        float *row = (direct ? y : stage) + (size_t)r * g.w;
        for (int c = 0; c < g.tw; c += 16) {
            v16 a = LD(q0 + c), b = LD(q1 + c), cc = LD(q2 + c), d = LD(q3 + c);
            v16 ev = a + b + cc, od = b - cc - d;
            ST(row + 2 * c, __builtin_shufflevector(ev, od, 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23));
            ST(row + 2 * c + 16, __builtin_shufflevector(ev, od, 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31));
        }
    }
    if (!direct) stage_plane(stage, (size_t)g.h * g.w, y);
}

/* ---- the 16 products ---- */

/* m (R rows × V vectors) = Σ_k wt[k][0..R) · u[k][0..16V) */
INLINE void fgemm_tile(const int R, const int V, const float *u, size_t up, const float *wt, int n, int K, float *m,
                       size_t mp) {
    v16 acc[FR][FV];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int v = 0; v < V; v++) acc[r][v] = (v16){0};
    for (int k = 0; k < K; k++) {
        const float *ur = u + (size_t)k * up, *wr = wt + (size_t)k * n;
        v16 uv[FV];
        UNROLL for (int v = 0; v < V; v++) uv[v] = LD(ur + 16 * v);
        UNROLL for (int r = 0; r < R; r++) {
            float s = wr[r];
            UNROLL for (int v = 0; v < V; v++) acc[r][v] += s * uv[v];
        }
    }
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int v = 0; v < V; v++) ST(m + (size_t)r * mp + 16 * v, acc[r][v]);
}

#define FTILE_R(V)                                                                                          \
    switch (R) {                                                                                            \
    case 1: fgemm_tile(1, V, u, up, wt, n, K, m, mp); break;                                                \
    case 2: fgemm_tile(2, V, u, up, wt, n, K, m, mp); break;                                                \
    case 3: fgemm_tile(3, V, u, up, wt, n, K, m, mp); break;                                                \
    case 4: fgemm_tile(4, V, u, up, wt, n, K, m, mp); break;                                                \
    case 5: fgemm_tile(5, V, u, up, wt, n, K, m, mp); break;                                                \
    case 6: fgemm_tile(6, V, u, up, wt, n, K, m, mp); break;                                                \
    case 7: fgemm_tile(7, V, u, up, wt, n, K, m, mp); break;                                                \
    default: fgemm_tile(8, V, u, up, wt, n, K, m, mp); break;                                               \
    }

INLINE void fgemm_dispatch(int R, int V, const float *u, size_t up, const float *wt, int n, int K, float *m,
                           size_t mp) {
    if (V == 3) { FTILE_R(3) } else if (V == 2) { FTILE_R(2) } else { FTILE_R(1) }
}

/* For each of the X positions ξ: m_ξ (N × T) = wt_ξᵀ (N × K) · u_ξ (K × T), columns in vectors
 * of 16, at most `maxv` vectors per register tile (one when NARROW). */
INLINE void fgemm(const int NARROW, const int X, const int maxv, const float *u, const float *wt, int K, int N, int T,
                  size_t P, float *m) {
    if (N <= 0) return;
    const int mv = NARROW ? 1 : maxv;
    /* register tiles of rows as equal as they can be (no thin last tile) */
    int most = NARROW ? NFR : FR, tiles = (N + most - 1) / most, rows = (N + tiles - 1) / tiles;
    for (int x = 0; x < X; x++) {
        const float *ux = u + x * xstride(K, P), *wx = wt + (size_t)x * K * N;
        float *mx = m + x * xstride(N, P);
        for (int t = 0; t < T; t += 16 * mv) {
            int V = (T - t + 15) / 16;
            if (V > mv) V = mv;
            for (int o = 0; o < N; o += rows) {
                int R = N - o < rows ? N - o : rows;
                fgemm_dispatch(R, V, ux + t, P, wx + o, N, K, mx + (size_t)o * P + t, P);
            }
        }
    }
}

/* The 16 lane sums of a[0..16) in lanes 0..15, added in a fixed order. */
INLINE v16 hsum16(const v16 *a) {
    v16 b[8], c[4], d[2];
    UNROLL for (int i = 0; i < 8; i++)
        b[i] = __builtin_shufflevector(a[2 * i], a[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
               __builtin_shufflevector(a[2 * i], a[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    UNROLL for (int i = 0; i < 4; i++)
        c[i] = __builtin_shufflevector(b[2 * i], b[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27) +
               __builtin_shufflevector(b[2 * i], b[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    UNROLL for (int i = 0; i < 2; i++)
        d[i] = __builtin_shufflevector(c[2 * i], c[2 * i + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +
               __builtin_shufflevector(c[2 * i], c[2 * i + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(d[0], d[1], EVEN) + __builtin_shufflevector(d[0], d[1], ODD);
}

/* z[r][s] += Σ_t gv[r][t] · uv[s][t] for an R × S block (rows of gv and uv `P` apart). */
INLINE void wgemm_tile(const int R, const int S, const float *gv, const float *uv, size_t P, int T, float *z, int ldz) {
    v16 acc[WR * WS];
    UNROLL for (int i = 0; i < WR * WS; i++) acc[i] = (v16){0};
    for (int t = 0; t < T; t += 16) {
        v16 a[WR], b[WS];
        UNROLL for (int r = 0; r < R; r++) a[r] = LD(gv + (size_t)r * P + t);
        UNROLL for (int s = 0; s < S; s++) b[s] = LD(uv + (size_t)s * P + t);
        UNROLL for (int r = 0; r < R; r++) UNROLL for (int s = 0; s < S; s++) acc[r * WS + s] += a[r] * b[s];
    }
    v16 sums = hsum16(acc);
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int s = 0; s < S; s++) z[(size_t)r * ldz + s] += sums[r * WS + s];
}


typedef float v8 __attribute__((vector_size(32), aligned(32)));
typedef float v4 __attribute__((vector_size(16), aligned(16)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

/* The narrow weight-gradient tile: z[r][s] += Σ_t gv[r][t] · uv[s][t] in vectors of 8 (T a
 * multiple of 8), each accumulator's lanes added in order. */
INLINE void wgemm_tile8(const int R, const int S, const float *gv, const float *uv, size_t P, int T, float *z,
                        int ldz) {
    v8 acc[WR][WS];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int s = 0; s < S; s++) acc[r][s] = (v8){0};
    for (int t = 0; t < T; t += 8) {
        v8 b[WS];
        UNROLL for (int s = 0; s < S; s++) b[s] = *(const v8u *)(uv + (size_t)s * P + t);
        UNROLL for (int r = 0; r < R; r++) {
            v8 a = *(const v8u *)(gv + (size_t)r * P + t);
            UNROLL for (int s = 0; s < S; s++) acc[r][s] += a * b[s];
        }
    }
    /* lane sums four accumulators at a time: pairs of lanes, then pairs of pairs, then halves */
    UNROLL for (int s = 0; s < S; s++) {
        v8 a = acc[0][s], b = R > 1 ? acc[1][s] : a, c = R > 2 ? acc[2][s] : a, d = R > 3 ? acc[3][s] : a;
        v8 ab = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
        v8 cd = __builtin_shufflevector(c, d, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(c, d, 2, 3, 10, 11, 6, 7, 14, 15);
        v8 q = __builtin_shufflevector(ab, cd, 0, 2, 8, 10, 4, 6, 12, 14) + __builtin_shufflevector(ab, cd, 1, 3, 9, 11, 5, 7, 13, 15);
        v4 sums = __builtin_shufflevector(q, q, 0, 1, 2, 3) + __builtin_shufflevector(q, q, 4, 5, 6, 7);
        UNROLL for (int r = 0; r < R; r++) z[(size_t)r * ldz + s] += sums[r];
    }
}

/* An R × S weight-gradient tile (R ≤ 4, S ≤ 4; S ≤ NWS when NARROW) as constants. */
#define WTILE(R, S_)                                                                                        \
    (NARROW ? wgemm_tile8(R, S_, gv, uv, P, T, z, ldz) : wgemm_tile(R, S_, gv, uv, P, T, z, ldz))
#define WTILE_S(R)                                                                                          \
    switch (S) {                                                                                            \
    case 1: WTILE(R, 1); break;                                                                             \
    case 2: WTILE(R, 2); break;                                                                             \
    case 3: WTILE(R, 3); break;                                                                             \
    default: WTILE(R, 4); break;                                                                            \
    }

INLINE void wgemm_dispatch(const int NARROW, int R, int S, const float *gv, const float *uv, size_t P, int T, float *z,
                           int ldz) {
    switch (R) {
    case 1: WTILE_S(1) break;
    case 2: WTILE_S(2) break;
    case 3: WTILE_S(3) break;
    default: WTILE_S(4) break;
    }
}

/* z_ξ (cout × cin) += v_ξ (cout × T) · u_ξᵀ (T × cin) for the X positions ξ */
INLINE void wgemm(const int NARROW, const int X, const float *v, const float *u, int cout, int cin, int T, size_t P,
                  float *z) {
    const int rows = NARROW ? NWR : WR, cols = NARROW ? NWS : WS;
    for (int x = 0; x < X; x++) {
        const float *vx = v + x * xstride(cout, P), *ux = u + x * xstride(cin, P);
        float *zx = z + (size_t)x * cout * cin;
        for (int o = 0; o < cout; o += rows) {
            int R = cout - o < rows ? cout - o : rows;
            for (int c = 0; c < cin; c += cols) {
                int S = cin - c < cols ? cin - c : cols;
                const float *a = vx + (size_t)o * P, *b = ux + (size_t)c * P;
                wgemm_dispatch(NARROW, R, S, a, b, P, T, zx + (size_t)o * cin + c, cin);
            }
        }
    }
}

/* ---- passes ---- */

/* Zeroes the columns [T, P) of the ch rows of each of X positions so sums over padded columns
 * add nothing. */
INLINE void zero_tail(float *a, int X, int ch, int T, size_t P) {
    for (int x = 0; x < X; x++)
        for (int r = 0; r < ch; r++) memset(a + x * xstride(ch, P) + (size_t)r * P + T, 0, sizeof(float) * (P - (size_t)T));
}

/* ---- F(4×4, 3×3) ----
 *
 * 4×4 output tiles from 6×6 input tiles, 36 products per input channel instead of 144, with
 *   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1],
 *   G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1⁄24 1⁄12 ⅙; 1⁄24 −1⁄12 ⅙; 0 0 1],
 *   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1].
 * Same structure as the forward pass above: row passes (columns taken apart mod 4 with two
 * rounds of shuffles), blocks of tiles through the column pass, 36 products and the output
 * column pass, then output row passes. ξ = 6·(row of the 6×6 tile) + column.
 */

/* F4V: vectors of 16 tiles per forward block (its U and M are 36·channels·16·F4V floats). */
enum { F4V = 2 };

/* The row width the packed row passes take for planes w wide: 16 (w 9 … 16) or 32 (17 … 32),
 * rows past w read as zeros; 0 (the general passes) for other widths. */
static int packed_width(int w) { return w > 8 && w <= 16 ? 16 : w > 16 && w <= 32 ? 32 : 0; }

static wgeom make_wgeom4(int h, int w) {
    wgeom g;
    int pw = packed_width(w);
    g.h = h; g.w = w; g.th = (h + 3) / 4; g.tw = pw ? pw / 4 : (w + 3) / 4; g.vw = pw ? pw : w;
    g.tiles = g.th * g.tw;
    g.twp = (int)rup((size_t)g.tw, 16);
    g.rb = (size_t)(g.th + 1) * g.tw + g.twp + 16;
    return g;
}

/* Row-pass buffers of one plane: 6 transformed columns × 4 row phases. */
#define RB4 24

static size_t block_pitch4(wgeom g) { return 16 * (size_t)F4V + (g.tiles % 16 == 0 ? 0 : 16); }

/* A staged plane plus room for reading 4·twp floats from its last row's start. */
static size_t stage_floats4(wgeom g) { return (size_t)g.h * g.w + 4 * (size_t)g.twp + 64; }

static int forward_images4(wgeom g, int cin, int cout) {
    return images_per_block_group(g, 16 * F4V, (size_t)(cin + cout) * RB4 * g.rb);
}

static size_t forward_floats4(int cin, int cout, wgeom g) {
    size_t per = (size_t)forward_images4(g, cin, cout);
    size_t bp = block_pitch4(g);
    return stage_floats4(g) + per * (size_t)(cin + cout) * RB4 * g.rb + 36 * (xstride(cin, bp) + xstride(cout, bp)) + 64;
}

void tk_wino4_weights(const float *weight, int cout, int cin, int flip, float *wt, int k0, int k1) {
    weights_run(36, weight, cout, cin, flip, wt, k0, k1);
}

/* Bᵀ d for six vectors (in place order: d0..d5 → u0..u5). */
INLINE void bt6(v16 d0, v16 d1, v16 d2, v16 d3, v16 d4, v16 d5, v16 *u) {
    v16 a = d4 - 4.0f * d2, b = d3 - 4.0f * d1, c = d4 - d2, e = 2.0f * (d3 - d1);
    u[0] = 4.0f * d0 - 5.0f * d2 + d4;
    u[1] = a + b;
    u[2] = a - b;
    u[3] = c + e;
    u[4] = c - e;
    u[5] = 4.0f * d1 - 5.0f * d3 + d5;
}

/* Aᵀ m for six vectors → four. */
INLINE void at6(v16 m0, v16 m1, v16 m2, v16 m3, v16 m4, v16 m5, v16 *s) {
    v16 a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
    s[0] = m0 + a + c;
    s[1] = b + 2.0f * d;
    s[2] = a + 4.0f * c;
    s[3] = b + 8.0f * d + m5;
}

/* Row pass of an input plane: rbp[(4·k + r mod 4)·rb + ⌊r/4⌋·tw + tx] = (Bᵀ d)_k of padded row r
 * at tile column tx, whose padded columns 4tx … 4tx+5 are x[r − 1][4tx − 1 … 4tx + 4]. */
INLINE void in_rows4(const float *x, wgeom g, float *stage, float *rbp) {
    stage_plane(x, (size_t)g.h * g.w, stage);
    int rows = 4 * g.th + 2;
    v16 z = (v16){0};
    for (int r = 0; r < rows; r++) {
        float *d[6];
        d[0] = rbp + (size_t)(r & 3) * g.rb + (size_t)(r >> 2) * g.tw;
        for (int k = 1; k < 6; k++) d[k] = d[k - 1] + 4 * g.rb;
        int y = r - 1;
        if (y < 0 || y >= g.h) {
            for (int c = 0; c < g.tw; c += 16)
                for (int k = 0; k < 6; k++) ST(d[k] + c, z);
            continue;
        }
        const float *row = stage + (size_t)y * g.w;
        for (int c = 0; c < g.tw; c += 16) {
            int b0 = 4 * c;
            v16 a0 = keep_below(LD(row + b0), b0, g.w), a1 = keep_below(LD(row + b0 + 16), b0 + 16, g.w);
            v16 a2 = keep_below(LD(row + b0 + 32), b0 + 32, g.w), a3 = keep_below(LD(row + b0 + 48), b0 + 48, g.w);
            v16 e01 = __builtin_shufflevector(a0, a1, EVEN), o01 = __builtin_shufflevector(a0, a1, ODD);
            v16 e23 = __builtin_shufflevector(a2, a3, EVEN), o23 = __builtin_shufflevector(a2, a3, ODD);
            v16 q0 = __builtin_shufflevector(e01, e23, EVEN), q2 = __builtin_shufflevector(e01, e23, ODD);
            v16 q1 = __builtin_shufflevector(o01, o23, EVEN), q3 = __builtin_shufflevector(o01, o23, ODD);
            float before = b0 > 0 ? row[b0 - 1] : 0.0f, after = b0 + 64 < g.w ? row[b0 + 64] : 0.0f;
            v16 left = z, right = z;
            left[15] = before; right[0] = after;
            v16 p0 = __builtin_shufflevector(left, q3, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
            v16 p5 = __builtin_shufflevector(q0, right, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
            v16 u[6];
            bt6(p0, q0, q1, q2, q3, p5, u);
            for (int k = 0; k < 6; k++) ST(d[k] + c, u[k]);
        }
    }
}

/* The row transform of 64 packed floats a[0..3]: groups of four columns (lane l: floats 4l … 4l+3,
 * the tiles' columns 4tx … 4tx+3) taken apart mod 4 with two rounds of shuffles, each tile's
 * outer columns 4tx−1 and 4tx+4 from its lane neighbours (zero where `first` or `last` is 0,
 * at a row's ends), then Bᵀ. */
INLINE void bt6_packed(const v16 *a, i16v first, i16v last, v16 *u) {
    v16 z = (v16){0};
    v16 e01 = __builtin_shufflevector(a[0], a[1], EVEN), o01 = __builtin_shufflevector(a[0], a[1], ODD);
    v16 e23 = __builtin_shufflevector(a[2], a[3], EVEN), o23 = __builtin_shufflevector(a[2], a[3], ODD);
    v16 q0 = __builtin_shufflevector(e01, e23, EVEN), q2 = __builtin_shufflevector(e01, e23, ODD);
    v16 q1 = __builtin_shufflevector(o01, o23, EVEN), q3 = __builtin_shufflevector(o01, o23, ODD);
    v16 p0 = __builtin_shufflevector(z, q3, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30);
    v16 p5 = __builtin_shufflevector(q0, z, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    bt6((v16)((i16v)p0 & first), q0, q1, q2, q3, (v16)((i16v)p5 & last), u);
}

/* Floats [col, col + 16) of row y of an h×w plane, zero past the row's end: one load where it
 * stays inside the plane (the next row's floats masked off), else through a copy. */
INLINE v16 row16(const float *x, wgeom g, int y, int col) {
    if (col >= g.w) return (v16){0};
    const float *p = x + (size_t)y * g.w + col;
    if (col + 16 <= g.w) return LD(p);
    if ((size_t)y * g.w + col + 16 <= (size_t)g.h * g.w) return keep_below(LD(p), col, g.w);
    float t[16] __attribute__((aligned(64))) = {0};
    memcpy(t, p, sizeof(float) * (size_t)(g.w - col));
    return LD(t);
}

/* Stores the first n (≤ 16) lanes of v at p. */
INLINE void store_first(float *p, v16 v, int n) {
    if (n >= 16) { ST(p, v); return; }
    float t[16] __attribute__((aligned(64)));
    ST(t, v);
    memcpy(p, t, sizeof(float) * (size_t)n);
}

/* in_rows4 for planes 9 to 32 wide, taken as rows of vw = 16 or 32 (tw = 4 or 8) whose columns
 * past w are zero: a vector holds the same row phase of 16/tw consecutive tile rows, read
 * straight from x, so no lane is idle and nothing is staged. */
INLINE void in_rows4_packed(const float *x, wgeom g, float *rbp) {
    const int R = 16 / g.tw; /* tile rows per vector */
    v16 z = (v16){0};
    i16v lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    i16v first = (lane & (g.tw - 1)) != 0, last = (lane & (g.tw - 1)) != g.tw - 1; /* −1: keep */
    for (int q = 0; q <= g.th; q += R)
        for (int ph = 0; ph < 4; ph++) {
            int r = 4 * q + ph;
            if (r > 4 * g.th + 1) break;
            v16 a[4];
            for (int j = 0; j < 4; j++) {
                int y = r - 1 + 4 * ((16 * j) / g.vw), col = (16 * j) % g.vw;
                a[j] = y >= 0 && y < g.h ? row16(x, g, y, col) : z;
            }
            v16 u[6];
            bt6_packed(a, first, last, u);
            float *d = rbp + (size_t)ph * g.rb + (size_t)q * g.tw;
            for (int k = 0; k < 6; k++) ST(d + (size_t)(4 * k) * g.rb, u[k]);
        }
}

/* Column pass: tiles [t0, t1) of the plane → u[ξ·xs + (t − t0)] (whole vectors). */
INLINE void in_cols4(const float *rbp, wgeom g, int t0, int t1, float *u, size_t xs) {
    for (int k = 0; k < 6; k++) {
        const float *p0 = rbp + (size_t)(4 * k) * g.rb, *p1 = p0 + g.rb, *p2 = p1 + g.rb, *p3 = p2 + g.rb;
        float *uk = u + (size_t)k * xs - t0;
        for (int t = t0; t < t1; t += 16) {
            v16 v[6];
            bt6(LD(p0 + t), LD(p1 + t), LD(p2 + t), LD(p3 + t), LD(p0 + t + g.tw), LD(p1 + t + g.tw), v);
            UNROLL for (int j = 0; j < 6; j++) ST(uk + (size_t)(6 * j) * xs + t, v[j]);
        }
    }
}

/* Output column pass: m[ξ·xs + (t − t0)] → sbp[(6·i + k)·rb + t] = (Aᵀ m_t)[i][k]. */
INLINE void out_cols4(const float *m, size_t xs, wgeom g, int t0, int t1, float *sbp) {
    for (int k = 0; k < 6; k++) {
        const float *mk = m + (size_t)k * xs - t0;
        float *s0 = sbp + (size_t)k * g.rb;
        for (int t = t0; t < t1; t += 16) {
            v16 s[4];
            at6(LD(mk + t), LD(mk + 6 * xs + t), LD(mk + 12 * xs + t), LD(mk + 18 * xs + t), LD(mk + 24 * xs + t),
                LD(mk + 30 * xs + t), s);
            UNROLL for (int i = 0; i < 4; i++) ST(s0 + (size_t)(6 * i) * g.rb + t, s[i]);
        }
    }
}

#define ZIPLO 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define ZIPHI 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31

/* Output row pass: y row 4ty+i, columns 4tx … 4tx+3 from sbp. A row is written with whole vectors
 * straight into y when they end inside the plane (what they write past the row's end belongs to
 * later rows, which overwrite it); the last rows go through `tmp`. */
INLINE void out_rows4(const float *sbp, wgeom g, float *tmp, float *y) {
    size_t plane = (size_t)g.h * g.w, span = 4 * (size_t)g.twp;
    for (int r = 0; r < g.h; r++) {
        int i = r & 3;
        size_t base = (size_t)(r >> 2) * g.tw;
        int inplace = (size_t)r * g.w + span <= plane;
        float *row = inplace ? y + (size_t)r * g.w : tmp;
        for (int c = 0; c < g.tw; c += 16) {
            const float *q = sbp + (size_t)(6 * i) * g.rb + base + c;
            v16 s[4];
            at6(LD(q), LD(q + g.rb), LD(q + 2 * g.rb), LD(q + 3 * g.rb), LD(q + 4 * g.rb), LD(q + 5 * g.rb), s);
            v16 a = __builtin_shufflevector(s[0], s[2], ZIPLO), a2 = __builtin_shufflevector(s[0], s[2], ZIPHI);
            v16 b = __builtin_shufflevector(s[1], s[3], ZIPLO), b2 = __builtin_shufflevector(s[1], s[3], ZIPHI);
            ST(row + 4 * c, __builtin_shufflevector(a, b, ZIPLO));
            ST(row + 4 * c + 16, __builtin_shufflevector(a, b, ZIPHI));
            ST(row + 4 * c + 32, __builtin_shufflevector(a2, b2, ZIPLO));
            ST(row + 4 * c + 48, __builtin_shufflevector(a2, b2, ZIPHI));
        }
        if (!inplace) memcpy(y + (size_t)r * g.w, tmp, sizeof(float) * g.w);
    }
}

/* Output row i of the tiles whose column-pass values start at p (6 buffers `rb` apart), packed:
 * o[0..3] are 64 floats, lane l's four outputs at 4l … 4l+3 (the inverse of bt6_packed's order). */
INLINE void at6_packed(const float *p, size_t rb, v16 *o) {
    v16 s[4];
    at6(LD(p), LD(p + rb), LD(p + 2 * rb), LD(p + 3 * rb), LD(p + 4 * rb), LD(p + 5 * rb), s);
    v16 a = __builtin_shufflevector(s[0], s[2], ZIPLO), a2 = __builtin_shufflevector(s[0], s[2], ZIPHI);
    v16 b = __builtin_shufflevector(s[1], s[3], ZIPLO), b2 = __builtin_shufflevector(s[1], s[3], ZIPHI);
    o[0] = __builtin_shufflevector(a, b, ZIPLO);
    o[1] = __builtin_shufflevector(a, b, ZIPHI);
    o[2] = __builtin_shufflevector(a2, b2, ZIPLO);
    o[3] = __builtin_shufflevector(a2, b2, ZIPHI);
}

/* Columns 16c … 16c + 15 of row yr of a plane: a whole vector where it ends inside the plane
 * (what it writes past the row's end is the next row's, written after it), exactly on the
 * plane's last row. */
INLINE void put_row16(float *y, wgeom g, int yr, int c, v16 v) {
    size_t at = (size_t)yr * g.w + 16 * (size_t)c;
    if (at + 16 <= (size_t)g.h * g.w) ST(y + at, v);
    else store_first(y + at, v, g.w - 16 * c);
}

/* out_rows4 for the packed planes: a vector holds 16/tw tile rows, its four output vectors are
 * (up to w floats of) rows. Rows go out in increasing order as whole vectors, so what a vector
 * writes past its row's end lands on the next row before that row is written; only the plane's
 * last row is written exactly, so nothing lands past the plane. */
INLINE void out_rows4_packed(const float *sbp, wgeom g, float *y) {
    const int R = 16 / g.tw, V = g.vw / 16; /* tile rows per vector; vectors per row */
    for (int q = 0; q < g.th; q += R) {
        v16 o[4][4]; /* o[i][s·V + c]: row 4(q + s) + i, columns 16c … 16c + 15 */
        for (int i = 0; i < 4; i++) {
            at6_packed(sbp + (size_t)(6 * i) * g.rb + (size_t)q * g.tw, g.rb, o[i]);
            int yr = 4 * q + i; /* the first tile row's rows go out at once, the others after */
            if (yr < g.h)
                for (int c = 0; c < V; c++) put_row16(y, g, yr, c, o[i][c]);
        }
        for (int s = 1; s < R; s++)
            for (int i = 0; i < 4; i++) {
                int yr = 4 * (q + s) + i;
                if (yr >= g.h) break;
                for (int c = 0; c < V; c++) put_row16(y, g, yr, c, o[i][s * V + c]);
            }
    }
}

/* Planes whose rows the packed row passes take: 9 to 32 wide. */
static int packed4(wgeom g) { return packed_width(g.w) != 0; }

/* ---- F(4×4, 3×3) weight gradient: Σ_tiles Gᵀ[(A dy Aᵀ) ⊙ (Bᵀ d B)]G, as F(2×2, 3×3)'s ---- */

static size_t wgrad_floats4(int cin, int cout, wgeom g) {
    size_t p = pitch(g, wgrad_images(cin, cout, g, 36));
    return stage_floats4(g) + RB4 * g.rb + 36 * (xstride(cin, p) + xstride(cout, p)) + 64;
}

/* A e for four vectors → six (A = (Aᵀ)ᵀ, 6×4). */
INLINE void a6(v16 e0, v16 e1, v16 e2, v16 e3, v16 *f) {
    v16 a = e0 + e2, b = e1 + e3, c = e0 + 4.0f * e2, d = 2.0f * e1 + 8.0f * e3;
    f[0] = e0; f[1] = a + b; f[2] = a - b; f[3] = c + d; f[4] = c - d; f[5] = e3;
}

/* A e for the 64 packed floats a[0..3] (lane l: values 4l … 4l+3), as bt6_packed. */
INLINE void a6_packed(const v16 *a, v16 *f) {
    v16 e01 = __builtin_shufflevector(a[0], a[1], EVEN), o01 = __builtin_shufflevector(a[0], a[1], ODD);
    v16 e23 = __builtin_shufflevector(a[2], a[3], EVEN), o23 = __builtin_shufflevector(a[2], a[3], ODD);
    a6(__builtin_shufflevector(e01, e23, EVEN), __builtin_shufflevector(o01, o23, EVEN),
       __builtin_shufflevector(e01, e23, ODD), __builtin_shufflevector(o01, o23, ODD), f);
}

/* Row pass of an output-gradient plane: rbp[(4·k + r mod 4)·rb + ⌊r/4⌋·tw + tx] = (A e)_k of row r's
 * values e = dy[r][4tx … 4tx+3]; rows past the plane are zero. Packed (16/tw tile rows to a vector)
 * for planes 16 or 32 wide, else row by row from a staged copy. */
INLINE void grad_rows4(const float *dy, wgeom g, int packed, float *stage, float *rbp) {
    v16 z = (v16){0};
    const float *src = dy;
    if (!packed) { stage_plane(dy, (size_t)g.h * g.w, stage); src = stage; }
    const int R = packed ? 16 / g.tw : 1;
    for (int q = 0; q < g.th; q += R)
        for (int ph = 0; ph < 4; ph++) {
            int r = 4 * q + ph;
            float *d = rbp + (size_t)ph * g.rb + (size_t)q * g.tw;
            for (int c = 0; c < (packed ? 16 : g.tw); c += 16) {
                v16 a[4];
                for (int j = 0; j < 4; j++) {
                    int y = packed ? r + 4 * ((16 * j) / g.vw) : r, col = packed ? (16 * j) % g.vw : 4 * c + 16 * j;
                    a[j] = y < g.h ? (packed ? row16(src, g, y, col)
                                             : keep_below(LD(src + (size_t)y * g.w + col), col, g.w))
                                   : z;
                }
                v16 f[6];
                a6_packed(a, f);
                for (int k = 0; k < 6; k++) ST(d + (size_t)(4 * k) * g.rb + c, f[k]);
            }
        }
}

/* Column pass of the output gradient: v[ξ·xs + t] = (A dy_t Aᵀ)_ξ for every tile of the plane. */
INLINE void grad_cols4(const float *rbp, wgeom g, float *v, size_t xs) {
    for (int k = 0; k < 6; k++) {
        const float *p0 = rbp + (size_t)(4 * k) * g.rb, *p1 = p0 + g.rb, *p2 = p1 + g.rb, *p3 = p2 + g.rb;
        float *vk = v + (size_t)k * xs;
        for (int t = 0; t < g.tiles; t += 16) {
            v16 f[6];
            a6(LD(p0 + t), LD(p1 + t), LD(p2 + t), LD(p3 + t), f);
            UNROLL for (int i = 0; i < 6; i++) ST(vk + (size_t)(6 * i) * xs + t, f[i]);
        }
    }
}

/* Gᵀ m G for one kernel's 36 values (scalars or vectors of 16 kernels alike), Gᵀ rows (¼, −⅙, −⅙,
 * 1⁄24, 1⁄24, 0), (0, −⅙, ⅙, 1⁄12, −1⁄12, 0), (0, −⅙, −⅙, ⅙, ⅙, 1), into o[0..8]. */
#define FINISH4(T, m, o)                                                                                    \
    do {                                                                                                    \
        T r_[3][6];                                                                                         \
        for (int j = 0; j < 6; j++) {                                                                       \
            T a = m[j], b = m[6 + j], c = m[12 + j], d = m[18 + j], e = m[24 + j], f = m[30 + j];           \
            r_[0][j] = a * 0.25f - (b + c) * (1.0f / 6) + (d + e) * (1.0f / 24);                            \
            r_[1][j] = (c - b) * (1.0f / 6) + (d - e) * (1.0f / 12);                                        \
            r_[2][j] = (d + e - b - c) * (1.0f / 6) + f;                                                    \
        }                                                                                                   \
        for (int i = 0; i < 3; i++) {                                                                       \
            T a = r_[i][0], b = r_[i][1], c = r_[i][2], d = r_[i][3], e = r_[i][4], f = r_[i][5];           \
            o[i * 3 + 0] = a * 0.25f - (b + c) * (1.0f / 6) + (d + e) * (1.0f / 24);                        \
            o[i * 3 + 1] = (c - b) * (1.0f / 6) + (d - e) * (1.0f / 12);                                    \
            o[i * 3 + 2] = (d + e - b - c) * (1.0f / 6) + f;                                                \
        }                                                                                                   \
    } while (0)

/* dweight[co][ci] += Gᵀ z[·][co][ci] G for X = 16 (F(2×2, 3×3)) or 36 (F(4×4, 3×3)) positions,
 * 16 kernels at a time: the positions of a kernel lie a plane apart, so one kernel at a time
 * reads X lines that share an L1 set (planes of 4 KiB multiples), while 16 consecutive kernels
 * use each line whole. Same arithmetic either way. */
INLINE void finish_body(const int X, const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1) {
#pragma clang fp contract(off)
    size_t plane = (size_t)cout * cin;
    if (p1 > plane) p1 = plane;
    size_t p = p0;
    for (; p + 16 <= p1; p += 16) {
        v16 m[36], o[9];
        for (int x = 0; x < X; x++) m[x] = LD(z + x * plane + p);
        if (X == 16) FINISH2(v16, m, o);
        else FINISH4(v16, m, o);
        float t[9][16] __attribute__((aligned(64)));
        for (int k = 0; k < 9; k++) ST(t[k], o[k]);
        float *dst = dweight + p * 9;
        for (int l = 0; l < 16; l++)
            for (int k = 0; k < 9; k++) dst[l * 9 + k] += t[k][l];
    }
    for (; p < p1; p++) {
        float m[36], o[9];
        for (int x = 0; x < X; x++) m[x] = z[x * plane + p];
        if (X == 16) FINISH2(float, m, o);
        else FINISH4(float, m, o);
        for (int k = 0; k < 9; k++) dweight[p * 9 + k] += o[k];
    }
}
#define FINISH_PARAMS (const int X, const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1)
#define FINISH_ARGS (X, z, cout, cin, dweight, p0, p1)
ISA_DISPATCH(finish, finish_body, FINISH_PARAMS, FINISH_ARGS)

void tk_wino_wgrad_finish(const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1) {
    finish_run(16, z, cout, cin, dweight, p0, p1);
}

void tk_wino4_wgrad_finish(const float *z, int cout, int cin, float *dweight, size_t p0, size_t p1) {
    finish_run(36, z, cout, cin, dweight, p0, p1);
}

/* ---- both tile sizes: F = 2 for F(2×2, 3×3), 4 for F(4×4, 3×3) (a constant after inlining) ---- */

INLINE void rows_in(const int F, int packed, const float *x, wgeom g, float *stage, float *rbp) {
    if (F == 2) in_rows(x, g, stage, rbp);
    else if (packed) in_rows4_packed(x, g, rbp);
    else in_rows4(x, g, stage, rbp);
}

INLINE void cols_in(const int F, const float *rbp, wgeom g, int t0, int t1, float *u, size_t xs) {
    if (F == 2) in_cols(rbp, g, t0, t1, u, xs); else in_cols4(rbp, g, t0, t1, u, xs);
}

INLINE void cols_out(const int F, const float *m, size_t xs, wgeom g, int t0, int t1, float *sbp) {
    if (F == 2) out_cols(m, xs, g, t0, t1, sbp); else out_cols4(m, xs, g, t0, t1, sbp);
}

INLINE void rows_out(const int F, int packed, const float *sbp, wgeom g, float *stage, float *y) {
    if (F == 2) out_rows(sbp, g, stage, y);
    else if (packed) out_rows4_packed(sbp, g, y);
    else out_rows4(sbp, g, stage, y);
}

INLINE void rows_grad(const int F, int packed, const float *dy, wgeom g, float *stage, float *rbp) {
    if (F == 2) grad_rows(dy, g, stage, rbp); else grad_rows4(dy, g, packed, stage, rbp);
}

INLINE void cols_grad(const int F, const float *rbp, wgeom g, float *v, size_t xs) {
    if (F == 2) grad_cols(rbp, g, v, xs); else grad_cols4(rbp, g, v, xs);
}

/*
 * Forward pass, a group of images at a time: row passes of all its input planes, then blocks of
 * tiles (16·block_vectors(cin) for F(2×2, 3×3), 16·F4V for F(4×4, 3×3)), each taken through the
 * column pass, the 16 or 36 products and the output column pass while its U and M stay in cache,
 * then the output row passes. F(4×4, 3×3) takes rows 9 to 32 wide packed.
 */
INLINE void forward_tiles(const int NARROW, const int F, const float *x, int n, int cin, int h, int w, const float *wt, int cout,
                          float *y, float *scratch) {
    const int X = F == 4 ? 36 : 16;
    wgeom g = F == 4 ? make_wgeom4(h, w) : make_wgeom(h, w);
    int per = F == 4 ? forward_images4(g, cin, cout) : forward_images(g, cin, cout);
    int B = 16 * (F == 4 ? F4V : block_vectors(cin)), packed = F == 4 && packed4(g);
    size_t plane = (size_t)h * w, BP = F == 4 ? block_pitch4(g) : block_pitch(g, cin), rbs = (F == 4 ? RB4 : 8) * g.rb;
    float *stage = scratch, *rin = stage + (F == 4 ? stage_floats4(g) : stage_floats(g));
    float *rout = rin + (size_t)per * cin * rbs, *u = rout + (size_t)per * cout * rbs, *m = u + X * xstride(cin, BP);
    for (int n0 = 0; n0 < n; n0 += per) {
        int k = n - n0 < per ? n - n0 : per, T = k * g.tiles;
        if (T <= B) {
            /* The group is one block: each plane's row pass goes straight into its column pass
             * (one row-pass buffer instead of the group's), the output's likewise, so only the
             * block's U and M need to stay in cache (32 channels at 14×14: 620 → 300 KiB). */
            for (int i = 0; i < k; i++)
                for (int c = 0; c < cin; c++) {
                    rows_in(F, packed, x + ((size_t)(n0 + i) * cin + c) * plane, g, stage, rin);
                    cols_in(F, rin, g, 0, g.tiles, u + (size_t)c * BP + (size_t)i * g.tiles, xstride(cin, BP));
                }
            fgemm(NARROW, X, F == 4 ? F4V : FV, u, wt, cin, cout, T, BP, m);
            for (int i = 0; i < k; i++)
                for (int o = 0; o < cout; o++) {
                    cols_out(F, m + (size_t)o * BP + (size_t)i * g.tiles, xstride(cout, BP), g, 0, g.tiles, rout);
                    rows_out(F, packed, rout, g, stage, y + ((size_t)(n0 + i) * cout + o) * plane);
                }
            continue;
        }
        for (int i = 0; i < k; i++)
            for (int c = 0; c < cin; c++)
                rows_in(F, packed, x + ((size_t)(n0 + i) * cin + c) * plane, g, stage, rin + ((size_t)i * cin + c) * rbs);
        for (int t0 = 0; t0 < T; t0 += B) {
            int t1 = T - t0 < B ? T : t0 + B;
            /* images' segments of the block, in order: each one's vector tail is overwritten by the next */
            for (int i = t0 / g.tiles; i < k && i * g.tiles < t1; i++) {
                int a = t0 > i * g.tiles ? t0 : i * g.tiles, b = t1 < (i + 1) * g.tiles ? t1 : (i + 1) * g.tiles;
                for (int c = 0; c < cin; c++)
                    cols_in(F, rin + ((size_t)i * cin + c) * rbs, g, a - i * g.tiles, b - i * g.tiles,
                            u + (size_t)c * BP + (a - t0), xstride(cin, BP));
            }
            fgemm(NARROW, X, F == 4 ? F4V : FV, u, wt, cin, cout, t1 - t0, BP, m);
            for (int i = t0 / g.tiles; i < k && i * g.tiles < t1; i++) {
                int a = t0 > i * g.tiles ? t0 : i * g.tiles, b = t1 < (i + 1) * g.tiles ? t1 : (i + 1) * g.tiles;
                for (int o = 0; o < cout; o++)
                    cols_out(F, m + (size_t)o * BP + (a - t0), xstride(cout, BP), g, a - i * g.tiles, b - i * g.tiles,
                             rout + ((size_t)i * cout + o) * rbs);
            }
        }
        for (int i = 0; i < k; i++)
            for (int o = 0; o < cout; o++)
                rows_out(F, packed, rout + ((size_t)i * cout + o) * rbs, g, stage, y + ((size_t)(n0 + i) * cout + o) * plane);
    }
}

/* Weight gradient, a group of images at a time: U and V of the whole group, then the 16 or 36
 * products summed over all its tiles. */
INLINE void wgrad_tiles(const int NARROW, const int F, const float *x, const float *dy, int n, int cin, int h, int w, int cout,
                        float *z, float *scratch) {
    const int X = F == 4 ? 36 : 16;
    wgeom g = F == 4 ? make_wgeom4(h, w) : make_wgeom(h, w);
    int per = wgrad_images(cin, cout, g, X), packed = F == 4 && packed4(g);
    size_t P = pitch(g, per), plane = (size_t)h * w;
    float *stage = scratch, *rb = stage + (F == 4 ? stage_floats4(g) : stage_floats(g));
    float *u = rb + (F == 4 ? RB4 : 8) * g.rb, *v = u + X * xstride(cin, P);
    memset(z, 0, sizeof(float) * X * (size_t)cin * cout);
    for (int n0 = 0; n0 < n; n0 += per) {
        int k = n - n0 < per ? n - n0 : per, T = k * g.tiles;
        for (int i = 0; i < k; i++) {
            for (int c = 0; c < cin; c++) {
                rows_in(F, packed, x + ((size_t)(n0 + i) * cin + c) * plane, g, stage, rb);
                cols_in(F, rb, g, 0, g.tiles, u + (size_t)c * P + (size_t)i * g.tiles, xstride(cin, P));
            }
            for (int o = 0; o < cout; o++) {
                rows_grad(F, packed, dy + ((size_t)(n0 + i) * cout + o) * plane, g, stage, rb);
                cols_grad(F, rb, g, v + (size_t)o * P + (size_t)i * g.tiles, xstride(cout, P));
            }
        }
        zero_tail(u, X, cin, T, P);
        zero_tail(v, X, cout, T, P);
        /* the narrow tiles step 8 tiles at a time: no products over a last half vector of zeros */
        wgemm(NARROW, X, v, u, cout, cin, (int)rup((size_t)T, NARROW ? 8 : 16), P, z);
    }
}

/* ---- F(4×4, 3×3) on planes up to 8 wide: eight images to a vector ----
 *
 * A row of 8 holds two tiles, so one plane's row would fill two lanes of sixteen. Here the row
 * passes put the same row of eight images in one vector (lane 2·i + tx for image i of an octet;
 * a row narrower than 8 is read with zeros after its end and written back w floats long),
 * and an octet's tiles are ordered (ty, image, tx): a virtual plane 16 tiles across, which the
 * column passes, the 36 products and the output column pass take unchanged. An octet that
 * runs past the batch reads zeros for its missing images and writes nothing for them.
 */

static wgeom make_wgeom8(int h, int w) {
    wgeom g;
    g.h = h; g.w = w; g.vw = 8; g.th = (h + 3) / 4; g.tw = 16;
    g.tiles = g.th * 16; g.twp = 16;
    g.rb = (size_t)(g.th + 1) * 16 + 16;
    return g;
}

static int octets8(int w) { return w <= 8; }

typedef int i8v __attribute__((vector_size(32)));

/* Row y of an h×w plane (w ≤ 8) as 8 floats, zero past w: one load where it stays inside the
 * plane, else through a copy. */
INLINE v8 row8(const float *p, wgeom g, int y) {
    const float *r = p + (size_t)y * g.w;
    if (g.w == 8) return *(const v8u *)r;
    if ((size_t)y * g.w + 8 <= (size_t)g.h * g.w) {
        i8v lane = {0, 1, 2, 3, 4, 5, 6, 7};
        return (v8)((i8v) * (const v8u *)r & (lane < g.w));
    }
    float t[8] __attribute__((aligned(32))) = {0};
    memcpy(t, r, sizeof(float) * (size_t)g.w);
    return *(const v8 *)t;
}

/* Writes the first w floats of row y of a plane from v: all 8 where they stay inside the plane,
 * for callers that write a plane's rows in increasing order (the floats past a row's end belong
 * to the next row, written after). */
INLINE void store_row8(float *p, wgeom g, int y, v8 v) {
    float *r = p + (size_t)y * g.w;
    if ((size_t)y * g.w + 8 <= (size_t)g.h * g.w) { *(v8u *)r = v; return; }
    float t[8] __attribute__((aligned(32)));
    *(v8 *)t = v;
    memcpy(r, t, sizeof(float) * (size_t)g.w);
}

/* Row y of images 2j and 2j+1 of an octet (plane pointers `img`), zero for images past k. */
INLINE v16 octet_rows(const float *const *img, wgeom g, int j, int k, int y) {
    v8 z = (v8){0};
    v8 lo = 2 * j < k ? row8(img[2 * j], g, y) : z;
    v8 hi = 2 * j + 1 < k ? row8(img[2 * j + 1], g, y) : z;
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

/* Row pass of one channel of an octet (k images, planes `is` floats apart): as in_rows4_packed,
 * a vector holding padded row r of all eight planes. */
INLINE void in_rows8(const float *x, size_t is, int k, wgeom g, float *rbp) {
    const float *img[8];
    for (int i = 0; i < 8; i++) img[i] = x + (size_t)(i < k ? i : 0) * is;
    i16v lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    i16v first = (lane & 1) != 0, last = (lane & 1) != 1;
    for (int ty = 0; ty <= g.th; ty++)
        for (int ph = 0; ph < 4; ph++) {
            int r = 4 * ty + ph, y = r - 1;
            if (r > 4 * g.th + 1) break;
            v16 a[4];
            for (int j = 0; j < 4; j++) a[j] = y >= 0 && y < g.h ? octet_rows(img, g, j, k, y) : (v16){0};
            v16 u[6];
            bt6_packed(a, first, last, u);
            float *d = rbp + (size_t)ph * g.rb + (size_t)ty * 16;
            for (int c = 0; c < 6; c++) ST(d + (size_t)(4 * c) * g.rb, u[c]);
        }
}

/* Output row pass of one channel of an octet: each output vector is one row of two images. */
INLINE void out_rows8(const float *sbp, wgeom g, float *y, size_t is, int k) {
    for (int ty = 0; ty < g.th; ty++)
        for (int i = 0; i < 4; i++) {
            int yr = 4 * ty + i;
            if (yr >= g.h) break;
            v16 o[4];
            at6_packed(sbp + (size_t)(6 * i) * g.rb + (size_t)ty * 16, g.rb, o);
            for (int j = 0; j < 4; j++) {
                if (2 * j < k)
                    store_row8(y + (size_t)(2 * j) * is, g, yr, __builtin_shufflevector(o[j], o[j], 0, 1, 2, 3, 4, 5, 6, 7));
                if (2 * j + 1 < k)
                    store_row8(y + (size_t)(2 * j + 1) * is, g, yr,
                               __builtin_shufflevector(o[j], o[j], 8, 9, 10, 11, 12, 13, 14, 15));
            }
        }
}

/* Row pass of one channel of an octet's output gradient, as grad_rows4. */
INLINE void grad_rows8(const float *dy, size_t is, int k, wgeom g, float *rbp) {
    const float *img[8];
    for (int i = 0; i < 8; i++) img[i] = dy + (size_t)(i < k ? i : 0) * is;
    for (int ty = 0; ty < g.th; ty++)
        for (int ph = 0; ph < 4; ph++) {
            int r = 4 * ty + ph;
            v16 a[4];
            for (int j = 0; j < 4; j++) a[j] = r < g.h ? octet_rows(img, g, j, k, r) : (v16){0};
            v16 f[6];
            a6_packed(a, f);
            float *d = rbp + (size_t)ph * g.rb + (size_t)ty * 16;
            for (int c = 0; c < 6; c++) ST(d + (size_t)(4 * c) * g.rb, f[c]);
        }
}

static size_t forward_floats8(int cin, int cout, wgeom g) {
    size_t bp = block_pitch4(g);
    return (size_t)(cin + cout) * RB4 * g.rb + 36 * (xstride(cin, bp) + xstride(cout, bp)) + 64;
}

/* Forward pass on planes up to 8 wide, an octet of images at a time: row passes of its cin channels,
 * blocks of 16·F4V tiles through the column pass, 36 products and output column pass, then the
 * output row passes. */
INLINE void forward8_impl(const int NARROW, const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y,
                          float *scratch) {
    wgeom g = make_wgeom8(h, w);
    int B = 16 * F4V;
    size_t plane = (size_t)h * w, BP = block_pitch4(g), rbs = RB4 * g.rb;
    float *rin = scratch, *rout = rin + (size_t)cin * rbs, *u = rout + (size_t)cout * rbs, *m = u + 36 * xstride(cin, BP);
    for (int n0 = 0; n0 < n; n0 += 8) {
        int k = n - n0 < 8 ? n - n0 : 8, T = g.tiles;
        if (T <= B) {
            /* One block per octet: row passes straight into column passes, one row-pass buffer
             * (64 channels at 7×7: 1.4 MiB → 600 KiB of buffers in use), as forward_tiles does. */
            for (int c = 0; c < cin; c++) {
                in_rows8(x + ((size_t)n0 * cin + c) * plane, (size_t)cin * plane, k, g, rin);
                in_cols4(rin, g, 0, T, u + (size_t)c * BP, xstride(cin, BP));
            }
            fgemm(NARROW, 36, F4V, u, wt, cin, cout, T, BP, m);
            for (int o = 0; o < cout; o++) {
                out_cols4(m + (size_t)o * BP, xstride(cout, BP), g, 0, T, rout);
                out_rows8(rout, g, y + ((size_t)n0 * cout + o) * plane, (size_t)cout * plane, k);
            }
            continue;
        }
        for (int c = 0; c < cin; c++)
            in_rows8(x + ((size_t)n0 * cin + c) * plane, (size_t)cin * plane, k, g, rin + (size_t)c * rbs);
        for (int t0 = 0; t0 < T; t0 += B) {
            int t1 = T - t0 < B ? T : t0 + B;
            for (int c = 0; c < cin; c++) in_cols4(rin + (size_t)c * rbs, g, t0, t1, u + (size_t)c * BP, xstride(cin, BP));
            fgemm(NARROW, 36, F4V, u, wt, cin, cout, t1 - t0, BP, m);
            for (int o = 0; o < cout; o++) out_cols4(m + (size_t)o * BP, xstride(cout, BP), g, t0, t1, rout + (size_t)o * rbs);
        }
        for (int o = 0; o < cout; o++)
            out_rows8(rout + (size_t)o * rbs, g, y + ((size_t)n0 * cout + o) * plane, (size_t)cout * plane, k);
    }
}

/* Weight-gradient octets per group: WGRAD8_OCTETS, fewer where U and V would pass WGRAD8_FLOATS. */
enum { WGRAD8_OCTETS = 4, WGRAD8_FLOATS = 1 << 20 };

static int wgrad_octets8(int cin, int cout, wgeom g) {
    size_t octet = (size_t)36 * (size_t)(cin + cout) * g.tiles;
    size_t cap = WGRAD8_FLOATS / octet;
    if (cap < 1) cap = 1;
    return cap < WGRAD8_OCTETS ? (int)cap : WGRAD8_OCTETS;
}

static size_t wgrad_floats8(int cin, int cout, wgeom g) {
    size_t p = (size_t)g.tiles * wgrad_octets8(cin, cout, g);
    return RB4 * g.rb + 36 * (xstride(cin, p) + xstride(cout, p)) + 64;
}

/* Weight gradient on planes up to 8 wide: U and V of a group's octets, then the 36 products summed over
 * its tiles (missing images of a last octet add zeros). */
INLINE void wgrad8_impl(const int NARROW, const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z, float *scratch) {
    wgeom g = make_wgeom8(h, w);
    int G = wgrad_octets8(cin, cout, g);
    size_t P = (size_t)G * g.tiles, plane = (size_t)h * w;
    float *rb = scratch, *u = rb + RB4 * g.rb, *v = u + 36 * xstride(cin, P);
    memset(z, 0, sizeof(float) * 36 * (size_t)cin * cout);
    for (int n0 = 0; n0 < n; n0 += 8 * G) {
        int oct = 0;
        for (int i0 = n0; i0 < n && oct < G; i0 += 8, oct++) {
            int k = n - i0 < 8 ? n - i0 : 8;
            for (int c = 0; c < cin; c++) {
                in_rows8(x + ((size_t)i0 * cin + c) * plane, (size_t)cin * plane, k, g, rb);
                in_cols4(rb, g, 0, g.tiles, u + (size_t)c * P + (size_t)oct * g.tiles, xstride(cin, P));
            }
            for (int o = 0; o < cout; o++) {
                grad_rows8(dy + ((size_t)i0 * cout + o) * plane, (size_t)cout * plane, k, g, rb);
                grad_cols4(rb, g, v + (size_t)o * P + (size_t)oct * g.tiles, xstride(cout, P));
            }
        }
        wgemm(NARROW, 36, v, u, cout, cin, oct * g.tiles, P, z);
    }
}

size_t tk_wino4_scratch(int cin, int cout, int h, int w) {
    if (octets8(w)) {
        wgeom g = make_wgeom8(h, w);
        return forward_floats8(cin, cout, g) > forward_floats8(cout, cin, g) ? forward_floats8(cin, cout, g)
                                                                             : forward_floats8(cout, cin, g);
    }
    wgeom g = make_wgeom4(h, w);
    size_t a = forward_floats4(cin, cout, g), b = forward_floats4(cout, cin, g);
    return a > b ? a : b;
}

int tk_wino4_wgrad_group(int cin, int cout, int h, int w) {
    if (octets8(w)) return 8 * wgrad_octets8(cin, cout, make_wgeom8(h, w));
    return wgrad_images(cin, cout, make_wgeom4(h, w), 36);
}

size_t tk_wino4_wgrad_scratch(int cin, int cout, int h, int w) {
    if (octets8(w)) return wgrad_floats8(cin, cout, make_wgeom8(h, w));
    return wgrad_floats4(cin, cout, make_wgeom4(h, w));
}

/* The four passes, each compiled for the three instruction sets and chosen by tk_isa(). */
INLINE void forward2_impl(const int NARROW, const float *x, int n, int cin, int h, int w, const float *wt, int cout,
                          float *y, float *s) {
    forward_tiles(NARROW, 2, x, n, cin, h, w, wt, cout, y, s);
}
INLINE void wgrad2_impl(const int NARROW, const float *x, const float *dy, int n, int cin, int h, int w, int cout,
                        float *z, float *s) {
    wgrad_tiles(NARROW, 2, x, dy, n, cin, h, w, cout, z, s);
}
INLINE void forward4_impl(const int NARROW, const float *x, int n, int cin, int h, int w, const float *wt, int cout,
                          float *y, float *s) {
    if (octets8(w)) forward8_impl(NARROW, x, n, cin, h, w, wt, cout, y, s);
    else forward_tiles(NARROW, 4, x, n, cin, h, w, wt, cout, y, s);
}
INLINE void wgrad4_impl(const int NARROW, const float *x, const float *dy, int n, int cin, int h, int w, int cout,
                        float *z, float *s) {
    if (octets8(w)) wgrad8_impl(NARROW, x, dy, n, cin, h, w, cout, z, s);
    else wgrad_tiles(NARROW, 4, x, dy, n, cin, h, w, cout, z, s);
}

/* Nonzero: the AVX2 path runs the AVX-512 register tiles (tests, on CPUs without AVX-512). */
static int wide_tiles = 0;
void tk_wino_use_wide_tiles(int on) { wide_tiles = on; }

#define VARIANTS(name, params, args)                                                                 \
    AVX512 static void name##_avx512 params { name##_impl(0, args); }                                \
    AVX2_W static void name##_avx2 params { name##_impl(1, args); }                                  \
    AVX2_W static void name##_avx2_wide params { name##_impl(0, args); }                             \
    static void name##_portable params { name##_impl(1, args); }                                     \
    static void name##_run params {                                                                  \
        switch (tk_isa()) {                                                                          \
        case TK_ISA_AVX512: name##_avx512(args); return;                                             \
        case TK_ISA_AVX2: if (wide_tiles) name##_avx2_wide(args); else name##_avx2(args); return;    \
        default: name##_portable(args); return;                                                      \
        }                                                                                            \
    }
#define FORWARD_PARAMS (const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y, float *s)
#define FORWARD_ARGS x, n, cin, h, w, wt, cout, y, s
#define WGRAD_PARAMS (const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z, float *s)
#define WGRAD_ARGS x, dy, n, cin, h, w, cout, z, s
VARIANTS(forward2, FORWARD_PARAMS, FORWARD_ARGS)
VARIANTS(wgrad2, WGRAD_PARAMS, WGRAD_ARGS)
VARIANTS(forward4, FORWARD_PARAMS, FORWARD_ARGS)
VARIANTS(wgrad4, WGRAD_PARAMS, WGRAD_ARGS)

void tk_wino_forward(const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y, float *s) {
    forward2_run(FORWARD_ARGS);
}
void tk_wino_wgrad(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z, float *s) {
    wgrad2_run(WGRAD_ARGS);
}
void tk_wino4_forward(const float *x, int n, int cin, int h, int w, const float *wt, int cout, float *y, float *s) {
    forward4_run(FORWARD_ARGS);
}
void tk_wino4_wgrad(const float *x, const float *dy, int n, int cin, int h, int w, int cout, float *z, float *s) {
    wgrad4_run(WGRAD_ARGS);
}
