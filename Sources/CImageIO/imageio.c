// JPEG and PNG codecs over libjpeg(-turbo) and libpng, with errors as return codes.
#include "imageio.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

// Larger images are refused before any pixel buffer is allocated (a corrupt header must
// not ask for gigabytes).
#define TK_MAX_SIDE 32768
#define TK_MAX_PIXELS (1u << 28)

static int fail(char *err, size_t errlen, const char *msg) {
    if (err && errlen) snprintf(err, errlen, "%s", msg);
    return 1;
}

static int size_ok(unsigned w, unsigned h, char *err, size_t errlen) {
    if (w == 0 || h == 0) return !fail(err, errlen, "image has zero width or height");
    if (w > TK_MAX_SIDE || h > TK_MAX_SIDE || (unsigned long long)w * h > TK_MAX_PIXELS) {
        char m[96];
        snprintf(m, sizeof m, "image of %ux%u pixels is larger than supported", w, h);
        return !fail(err, errlen, m);
    }
    return 1;
}

void tk_image_free(void *p) { free(p); }

// ---------------------------------------------------------------- JPEG

struct tk_jpeg_error {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void tk_jpeg_error_exit(j_common_ptr cinfo) {
    struct tk_jpeg_error *e = (struct tk_jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

// Warnings (e.g. "premature end of data segment", which libjpeg pads over with gray) are
// errors here: a truncated file must not decode into a silently wrong image.
static void tk_jpeg_emit(j_common_ptr cinfo, int level) {
    if (level < 0) tk_jpeg_error_exit(cinfo);
}

int tk_jpeg_decode(const uint8_t *data, size_t size, uint8_t **pixels, int *width, int *height,
                   int *channels, char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    struct tk_jpeg_error jerr;
    uint8_t *volatile out = NULL;
    *pixels = NULL;
    if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) return fail(err, errlen, "not a JPEG file (no SOI marker)");
    cinfo.err = jpeg_std_error(&jerr.mgr);
    jerr.mgr.error_exit = tk_jpeg_error_exit;
    jerr.mgr.emit_message = tk_jpeg_emit;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(out);
        return fail(err, errlen, jerr.message);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    jpeg_read_header(&cinfo, TRUE);
    int c;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; c = 1; break;
    case JCS_YCbCr: case JCS_RGB: cinfo.out_color_space = JCS_RGB; c = 3; break;
    default:
        jpeg_destroy_decompress(&cinfo);
        return fail(err, errlen, "unsupported JPEG colour space (only gray and RGB/YCbCr)");
    }
    if (!size_ok(cinfo.image_width, cinfo.image_height, err, errlen)) {
        jpeg_destroy_decompress(&cinfo);
        return 1;
    }
    jpeg_start_decompress(&cinfo);
    size_t w = cinfo.output_width, h = cinfo.output_height, row = w * (size_t)c;
    out = malloc(row * h);
    if (!out) { jpeg_destroy_decompress(&cinfo); return fail(err, errlen, "out of memory"); }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW r = out + cinfo.output_scanline * row;
        jpeg_read_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    *pixels = out; *width = (int)w; *height = (int)h; *channels = c;
    return 0;
}

int tk_jpeg_encode(const uint8_t *pixels, int width, int height, int channels, int quality,
                   uint8_t **out, size_t *outsize, char *err, size_t errlen) {
    struct jpeg_compress_struct cinfo;
    struct tk_jpeg_error jerr;
    unsigned char *volatile buf = NULL;
    unsigned long len = 0;
    *out = NULL; *outsize = 0;
    if (channels != 1 && channels != 3) return fail(err, errlen, "JPEG takes 1 or 3 channels");
    if (!size_ok((unsigned)width, (unsigned)height, err, errlen)) return 1;
    cinfo.err = jpeg_std_error(&jerr.mgr);
    jerr.mgr.error_exit = tk_jpeg_error_exit;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(buf);
        return fail(err, errlen, jerr.message);
    }
    jpeg_create_compress(&cinfo);
    unsigned char *b = NULL;
    jpeg_mem_dest(&cinfo, &b, &len);
    cinfo.image_width = (JDIMENSION)width;
    cinfo.image_height = (JDIMENSION)height;
    cinfo.input_components = channels;
    cinfo.in_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&cinfo, TRUE);
    size_t row = (size_t)width * channels;
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW r = (JSAMPROW)(pixels + cinfo.next_scanline * row);
        jpeg_write_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_compress(&cinfo);
    buf = b;
    jpeg_destroy_compress(&cinfo);
    *out = buf; *outsize = len;
    return 0;
}

// ---------------------------------------------------------------- PNG

struct tk_png_io {
    const uint8_t *data;
    size_t size, at;
    uint8_t *buf;       // encoder output
    size_t len, cap;
    char message[256];
};

static void tk_png_error(png_structp png, png_const_charp msg) {
    struct tk_png_io *io = png_get_error_ptr(png);
    snprintf(io->message, sizeof io->message, "%s", msg);
    png_longjmp(png, 1);
}

static void tk_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void tk_png_read(png_structp png, png_bytep dst, size_t n) {
    struct tk_png_io *io = png_get_io_ptr(png);
    if (n > io->size - io->at) png_error(png, "file is truncated");
    memcpy(dst, io->data + io->at, n);
    io->at += n;
}

int tk_png_decode(const uint8_t *data, size_t size, uint8_t **pixels, int *width, int *height,
                  int *channels, char *err, size_t errlen) {
    *pixels = NULL;
    if (size < 8 || png_sig_cmp(data, 0, 8)) return fail(err, errlen, "not a PNG file (bad signature)");
    struct tk_png_io io = {.data = data, .size = size, .at = 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &io, tk_png_error, tk_png_warning);
    if (!png) return fail(err, errlen, "out of memory");
    png_infop info = png_create_info_struct(png);
    uint8_t *volatile out = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) { png_destroy_read_struct(&png, NULL, NULL); return fail(err, errlen, "out of memory"); }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(out); free(rows);
        return fail(err, errlen, io.message);
    }
    png_set_read_fn(png, &io, tk_png_read);
    // A corrupt checksum is an error, not a warning.
    png_set_crc_action(png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), type = png_get_color_type(png, info);
    if (!size_ok(w, h, err, errlen)) { png_destroy_read_struct(&png, &info, NULL); return 1; }
    if (depth == 16) {
        png_destroy_read_struct(&png, &info, NULL);
        return fail(err, errlen, "unsupported PNG: 16 bits per sample (only 8-bit images)");
    }
    if (type == PNG_COLOR_TYPE_GRAY_ALPHA) {
        png_destroy_read_struct(&png, &info, NULL);
        return fail(err, errlen, "unsupported PNG: gray with alpha (only gray, RGB and RGBA)");
    }
    int c;
    if (type == PNG_COLOR_TYPE_PALETTE) {
        png_set_palette_to_rgb(png);
        c = 3;
        if (png_get_valid(png, info, PNG_INFO_tRNS)) { png_set_tRNS_to_alpha(png); c = 4; }
    } else if (type == PNG_COLOR_TYPE_GRAY) {
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS)) {
            png_destroy_read_struct(&png, &info, NULL);
            return fail(err, errlen, "unsupported PNG: gray with a transparent colour (only gray, RGB and RGBA)");
        }
        c = 1;
    } else if (type == PNG_COLOR_TYPE_RGB) {
        c = 3;
        if (png_get_valid(png, info, PNG_INFO_tRNS)) { png_set_tRNS_to_alpha(png); c = 4; }
    } else if (type == PNG_COLOR_TYPE_RGB_ALPHA) {
        c = 4;
    } else {
        png_destroy_read_struct(&png, &info, NULL);
        return fail(err, errlen, "unsupported PNG colour type");
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t row = (size_t)w * c;
    if (png_get_rowbytes(png, info) != row) png_error(png, "unexpected row size after conversion");
    out = malloc(row * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!out || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out + y * row;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *pixels = out; *width = (int)w; *height = (int)h; *channels = c;
    return 0;
}

static void tk_png_write(png_structp png, png_bytep src, size_t n) {
    struct tk_png_io *io = png_get_io_ptr(png);
    if (io->len + n > io->cap) {
        size_t cap = io->cap ? io->cap : 4096;
        while (cap < io->len + n) cap *= 2;
        uint8_t *b = realloc(io->buf, cap);
        if (!b) png_error(png, "out of memory");
        io->buf = b; io->cap = cap;
    }
    memcpy(io->buf + io->len, src, n);
    io->len += n;
}

static void tk_png_flush(png_structp png) { (void)png; }

int tk_png_encode(const uint8_t *pixels, int width, int height, int channels,
                  uint8_t **out, size_t *outsize, char *err, size_t errlen) {
    *out = NULL; *outsize = 0;
    int type = channels == 1 ? PNG_COLOR_TYPE_GRAY : channels == 3 ? PNG_COLOR_TYPE_RGB
             : channels == 4 ? PNG_COLOR_TYPE_RGB_ALPHA : -1;
    if (type < 0) return fail(err, errlen, "PNG takes 1, 3 or 4 channels");
    if (!size_ok((unsigned)width, (unsigned)height, err, errlen)) return 1;
    struct tk_png_io io = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &io, tk_png_error, tk_png_warning);
    if (!png) return fail(err, errlen, "out of memory");
    png_infop info = png_create_info_struct(png);
    if (!info) { png_destroy_write_struct(&png, NULL); return fail(err, errlen, "out of memory"); }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(io.buf);
        return fail(err, errlen, io.message);
    }
    png_set_write_fn(png, &io, tk_png_write, tk_png_flush);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, type, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t row = (size_t)width * channels;
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + y * row));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    *out = io.buf; *outsize = io.len;
    return 0;
}
