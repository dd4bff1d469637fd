#ifndef TRICKS_IMAGEIO_H
#define TRICKS_IMAGEIO_H
#include <stddef.h>
#include <stdint.h>

/// JPEG and PNG in memory, through libjpeg(-turbo) and libpng. Both libraries report errors
/// by longjmp, which Swift cannot catch; these wrappers turn them into a return code and a
/// message. Decoded pixels are 8-bit, interleaved (H, W, C) with C = 1 (gray), 3 (RGB) or
/// 4 (RGBA, PNG only); free them (and encoded bytes) with `tk_image_free`.

/// Returns 0, or non-zero with a message in `err` (at most `errlen` bytes, NUL-terminated).
int tk_jpeg_decode(const uint8_t *data, size_t size, uint8_t **pixels, int *width, int *height,
                   int *channels, char *err, size_t errlen);
/// Baseline JPEG at `quality` (1-100), 4:2:0 chroma for RGB. `channels` is 1 or 3.
int tk_jpeg_encode(const uint8_t *pixels, int width, int height, int channels, int quality,
                   uint8_t **out, size_t *outsize, char *err, size_t errlen);

/// 8-bit gray, RGB or RGBA PNG (palette images become RGB or RGBA; gray below 8 bits is
/// widened). 16-bit and gray+alpha images are refused as unsupported.
int tk_png_decode(const uint8_t *data, size_t size, uint8_t **pixels, int *width, int *height,
                  int *channels, char *err, size_t errlen);
/// `channels` is 1, 3 or 4.
int tk_png_encode(const uint8_t *pixels, int width, int height, int channels,
                  uint8_t **out, size_t *outsize, char *err, size_t errlen);

void tk_image_free(void *p);

#endif
