#include <zlib.h>

/// `inflateInit2` is a macro; this wrapper makes it callable from Swift.
static inline int czlib_inflate_init2(z_streamp strm, int windowBits) {
    return inflateInit2(strm, windowBits);
}
